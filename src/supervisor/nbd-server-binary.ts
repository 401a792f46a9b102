import { execFile } from 'node:child_process';

/** Checks that `bin` runs and is nbd-server; resolves to its version or rejects with an operator-facing reason. */
export function probeNbdServer(bin: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, ['-V'], { timeout: 5000 }, (err, stdout, stderr) => {
      const match = /nbd-server version (\S+)/.exec(`${stdout}${stderr}`);
      if (match) return resolve(match[1]!);
      const code = (err as NodeJS.ErrnoException | null)?.code;
      if (code === 'ENOENT') return reject(new Error(`nbd-server binary "${bin}" not found: install nbd-server or set --nbd-server-bin`));
      if (code === 'EACCES') return reject(new Error(`nbd-server binary "${bin}" is not executable`));
      reject(new Error(`"${bin}" is not nbd-server: "${bin} -V" did not print an nbd-server version`));
    });
  });
}
