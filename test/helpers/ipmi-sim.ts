import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from '../../testkit/daemon.js';

/** A free UDP port on 127.0.0.1 (just now): ipmi_sim takes it, or a test finds nothing answering there. */
export async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', resolve);
  });
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

export interface SimulatedBmc {
  port: number;
  user: string;
  password: string;
  /** Whether the machine's process (what "power on" started) runs. */
  processRunning(): boolean;
  /** The boot device the BMC was last told ("pxe"), or null. */
  bootDevice(): string | null;
  /** Each chassis command the BMC carried out, in order ("set power 1", "set boot pxe"...). */
  commands(): string[];
  stop(): void;
}

/**
 * A real BMC simulator: Debian's `ipmi_sim` (openipmi) on 127.0.0.1 alone, reached over RMCP+ by
 * ipmitool as a BMC on the network would be. Its `chassis_control` program (ipmi_lan(5)) is the
 * machine: power on starts a process (`options.machine`, e.g. a qemu guest), power off kills it, status says whether it runs, bootdev is
 * written to a file. Not `startcmd`: measured here, ipmi_sim then powers the process on and off
 * but refuses every boot option ("Set Chassis Boot Parameter 5 failed: Invalid data field"),
 * since only a chassis_control program takes them.
 */
export async function startSimulatedBmc(options: { machine?: string[] } = {}): Promise<SimulatedBmc> {
  const dir = tempDir('nbdmux-bmc-');
  // The machine power on starts: a process that only waits, or a qemu guest. Its own process group, which power off kills whole.
  const quoted = (options.machine ?? ['sleep', '3600']).map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(' ');
  fs.writeFileSync(path.join(dir, 'machine'), `#!/bin/sh\nexec ${quoted}\n`, { mode: 0o755 });
  const port = await freeUdpPort();
  const user = 'admin';
  const password = 'lab-secret-7';
  const control = path.join(dir, 'chassis');
  // ipmi_sim reads the program's stdout to its end: the machine's process must not hold it. The pid
  // file goes only once the kill worked (dash's kill takes no "--"), so a machine that survives shows as on.
  fs.writeFileSync(
    control,
    `#!/bin/sh
d='${dir}'
echo "$*" >> "$d/commands"
running() { [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null; }
case "$1 $2" in
  "get power") if running; then echo power:1; else echo power:0; fi ;;
  "get boot") echo "boot:$(cat "$d/boot" 2>/dev/null || echo none)" ;;
  "set power")
    if [ "$3" = 1 ]; then running || { setsid "$d/machine" </dev/null >/dev/null 2>&1 & echo $! > "$d/pid"; }
    else ! running || { kill -KILL "-$(cat "$d/pid")" && rm -f "$d/pid"; }; fi ;;
  "set boot") echo "$3" > "$d/boot" ;;
esac
exit 0
`,
    { mode: 0o755 },
  );
  fs.writeFileSync(
    path.join(dir, 'lan.conf'),
    `name "nbdmux-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 ${port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "${control}"
  user 2 true "${user}" "${password}" admin 10 none md2 md5 straight
`,
  );
  fs.writeFileSync(
    path.join(dir, 'mc.emu'),
    'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 dynsens\nmc_enable 0x20\n',
  );
  fs.mkdirSync(path.join(dir, 'state'));
  const child: ChildProcess = spawn('ipmi_sim', ['-c', 'lan.conf', '-f', 'mc.emu', '-s', 'state', '-n'], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  await untilUdpListening(port, () => `ipmi_sim did not listen on 127.0.0.1:${port}: ${stderr}`);
  const read = (file: string) => {
    try {
      return fs.readFileSync(path.join(dir, file), 'utf8').trim();
    } catch {
      return null;
    }
  };
  const running = () => {
    const pid = read('pid');
    if (pid === null) return false;
    try {
      process.kill(Number(pid), 0);
      return true;
    } catch {
      return false;
    }
  };
  return {
    port,
    user,
    password,
    processRunning: running,
    bootDevice: () => read('boot'),
    commands: () => (read('commands') ?? '').split('\n').filter((line) => line !== '' && !line.startsWith('get ')),
    stop() {
      child.kill('SIGKILL');
      const pid = read('pid');
      if (pid !== null && running()) process.kill(-Number(pid), 'SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** ipmi_sim says nothing when its LAN is up: its UDP socket in /proc/net/udp is the sign. */
async function untilUdpListening(port: number, why: () => string): Promise<void> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  const deadline = Date.now() + 10_000;
  while (!fs.readFileSync('/proc/net/udp', 'utf8').includes(`0100007F${hex}`)) {
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
