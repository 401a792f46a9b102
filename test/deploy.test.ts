import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createNbdmuxClient, isNbdmuxError } from '../src/client.js';
import { options } from '../src/options.js';
import { killEverything, tempDir, waitFor } from '../testkit/daemon.js';
import { makeImage, readExport, sha256 } from '../testkit/nbd.js';
import { freePort } from '../testkit/ports.js';
import { allPids, parentPid } from '../testkit/proc.js';
import { buildKitPackages } from './helpers/build-kit.js';
import { fakeKit } from './helpers/fake-kit.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const deploy = path.join(repo, 'deploy');
/** The daemon's own name for the kit's variable, from its option table. */
const kitVariable = options.rambootKit.env;
/** What imports run (src/images): xz -dc, zstd -dc, qemu-img. */
const importPackages = ['xz-utils', 'zstd', 'qemu-utils'];

interface Instruction {
  keyword: string;
  args: string;
}

/** The Containerfile's stages, each a list of instructions: continuations joined, comments dropped. */
function parseContainerfile(text: string): Instruction[][] {
  const lines = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((line) => line.trim() !== '');
  const stages: Instruction[][] = [];
  for (const line of lines) {
    const [, keyword, args] = /^\s*(\w+)\s+(.*)$/.exec(line)!;
    if (keyword!.toUpperCase() === 'FROM') stages.push([]);
    stages.at(-1)!.push({ keyword: keyword!.toUpperCase(), args: args!.trim() });
  }
  return stages;
}

/** What the image runs: taken from the runtime (last) stage, so the test follows the Containerfile rather than repeating it. */
function runtimeSpec() {
  const stages = parseContainerfile(fs.readFileSync(path.join(deploy, 'Containerfile'), 'utf8'));
  const build = stages[0]!;
  const runtime = stages.at(-1)!;
  const all = (keyword: string) => runtime.filter((i) => i.keyword === keyword).map((i) => i.args);
  const last = (keyword: string) => all(keyword).at(-1);
  const env: Record<string, string> = {};
  for (const args of all('ENV')) {
    for (const [, key, value] of args.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g))
      env[key!] = value!.startsWith('"') ? (JSON.parse(value!) as string) : value!;
  }
  const healthcheck = last('HEALTHCHECK')!;
  return {
    from: runtime[0]!.args,
    buildWorkdir: build.filter((i) => i.keyword === 'WORKDIR').at(-1)!.args,
    buildCopies: build.filter((i) => i.keyword === 'COPY').map((i) => i.args.split(/\s+/).slice(0, -1)),
    buildRun: build
      .filter((i) => i.keyword === 'RUN')
      .map((i) => i.args)
      .join(' && '),
    /** Where the build stage's `ramboot/build-kit DIR` puts the kit, resolved in the build stage. */
    kitBuiltAt: build
      .filter((i) => i.keyword === 'RUN')
      .flatMap((i) => [...i.args.matchAll(/ramboot\/build-kit (\S+)/g)].map((m) => m[1]!))
      .map((dir) => path.resolve(build.filter((i) => i.keyword === 'WORKDIR').at(-1)!.args, dir)),
    run: all('RUN').join(' && '),
    env,
    user: last('USER')!,
    workdir: last('WORKDIR')!,
    volumes: all('VOLUME').flatMap((args) => JSON.parse(args) as string[]),
    exposed: all('EXPOSE')
      .flatMap((args) => args.split(/\s+/))
      .map(Number),
    copiesFromBuild: all('COPY')
      .filter((args) => args.startsWith('--from=build '))
      .map((args) => args.split(/\s+/).slice(1) as [string, string]),
    healthcheck: JSON.parse(healthcheck.slice(healthcheck.indexOf('CMD ') + 4)) as string[],
    stopSignal: last('STOPSIGNAL') ?? 'SIGTERM',
    entrypoint: JSON.parse(last('ENTRYPOINT')!) as string[],
    cmd: JSON.parse(last('CMD') ?? '[]') as string[],
  };
}

/** The packages `npm prune --omit=dev` keeps: what the image's node_modules holds. */
function productionPackages(): string[] {
  const listed = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: repo, encoding: 'utf8' });
  return listed
    .split('\n')
    .filter((dir) => dir.startsWith(path.join(repo, 'node_modules') + path.sep))
    .map((dir) => path.relative(repo, dir));
}

describe('deploy/Containerfile', () => {
  const spec = runtimeSpec();
  const dataDirs: string[] = [];
  const roots: string[] = [];
  afterAll(() => {
    killEverything(dataDirs);
    for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
  });

  it('builds one image with Node 20, nbd-server and an init, running unprivileged with data in a volume and read-only images', () => {
    expect(spec.from).toMatch(/^\S*node:20[-.\w]*$/);
    expect(spec.run).toMatch(/apt-get install [^&]*\bnbd-server\b/);
    expect(spec.run).toMatch(/apt-get install [^&]*\btini\b/);
    // Persistent machines' state: mkfs.ext4, e2fsck, resize2fs (and debugfs for boot inspection).
    expect(spec.run).toMatch(/apt-get install [^&]*\be2fsprogs\b/);
    expect(spec.entrypoint.slice(0, 2)).toEqual(['/usr/bin/tini', '--']);
    expect(spec.user).not.toMatch(/^(root|0)(:|$)/);
    expect(spec.run).toMatch(new RegExp(`useradd [^&]*--system[^&]* ${spec.user}\\b`));
    expect(spec.volumes).toEqual([spec.env.NBDMUX_DATA_DIR]);
    // The volume starts out owned by the daemon's user, so a fresh named volume is writable.
    expect(spec.run).toContain(`install -d -o ${spec.user} -g ${spec.user} -m 0750 ${spec.env.NBDMUX_DATA_DIR}`);
    expect(spec.env.NBDMUX_IMAGE_ROOTS).toBe('/images');
    expect(spec.exposed).toEqual([Number(spec.env.NBDMUX_PORT), Number(spec.env.NBDMUX_NBD_PORT)]);
    expect(spec.exposed).toEqual([4040, 10809]);
    expect(spec.healthcheck.join(' ')).toContain('/healthz');
    expect(spec.stopSignal).toBe('SIGTERM');
    for (const pkg of importPackages) expect(spec.run, `${pkg}: imports need it`).toMatch(new RegExp(`apt-get install [^&]*\\b${pkg}\\b`));
    // Everything the build stage copies exists in the repository.
    for (const sources of spec.buildCopies) for (const source of sources) expect(fs.existsSync(path.join(repo, source)), source).toBe(true);
  });

  it('carries a ramboot kit built in the build stage, and tells the daemon where it is', () => {
    // The build stage installs what build-kit needs, has the ramboot scripts, and builds the kit once.
    for (const pkg of buildKitPackages()) expect(spec.buildRun, pkg).toMatch(new RegExp(`apt-get install [^&]*\\b${pkg}\\b`));
    expect(spec.buildCopies).toContainEqual(['ramboot']);
    expect(spec.kitBuiltAt).toHaveLength(1);
    // The runtime stage copies that kit to the directory its environment names, by the daemon's own variable.
    const kitDir = spec.env[kitVariable];
    expect(kitDir, `ENV ${kitVariable}`).toMatch(/^\//);
    const copied = spec.copiesFromBuild.find(([source]) => path.resolve(spec.buildWorkdir, source) === spec.kitBuiltAt[0]);
    expect(copied, `COPY --from=build ${spec.kitBuiltAt[0]}`).toBeDefined();
    expect(path.resolve(spec.workdir, copied![1])).toBe(kitDir);
  });

  it('runs the daemon exactly as its ENTRYPOINT, CMD, ENV and USER say: serves images, refuses others, passes its HEALTHCHECK, stops cleanly on SIGTERM', async () => {
    expect(process.getuid!(), 'this test creates the image user and must run as root (as CI does)').toBe(0);
    expect(fs.existsSync(spec.entrypoint[0]!), `${spec.entrypoint[0]} is missing: run scripts/setup`).toBe(true);

    // The user, created the way the Containerfile creates it.
    if (spawnSync('id', ['-u', spec.user]).status !== 0) {
      const useradd = /useradd ([^&]*)/.exec(spec.run)![1]!.trim().split(/\s+/);
      execFileSync('useradd', useradd);
    }
    const uid = Number(execFileSync('id', ['-u', spec.user], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', spec.user], { encoding: 'utf8' }));

    // The image's file system under a temporary root: the app as COPY --from=build lays it out
    // (production packages only, as after `npm prune --omit=dev`), the volume, the image root.
    const root = tempDir('nbdmux-image-root-');
    fs.chmodSync(root, 0o755);
    roots.push(root);
    const inImage = (containerPath: string) => path.join(root, containerPath);
    const mapPaths = (text: string) =>
      [spec.workdir, ...spec.volumes, spec.env.NBDMUX_IMAGE_ROOTS!].reduce((t, p) => t.split(p).join(inImage(p)), text);
    for (const [source, target] of spec.copiesFromBuild) {
      const from = path.join(repo, path.relative(spec.buildWorkdir, path.resolve(spec.buildWorkdir, source)));
      // As COPY does: a target ending in / is a directory to copy into.
      const to = inImage(path.join(path.resolve(spec.workdir, target), target.endsWith('/') ? path.basename(from) : ''));
      if (spec.kitBuiltAt.includes(path.resolve(spec.buildWorkdir, source))) {
        // The build stage builds the kit from Debian's mirror; a kit nbdmux accepts stands in for
        // it here (booting a real one is test/pxe-boot.test.ts's job): what counts is that the daemon gets it.
        const kit = fakeKit(Buffer.from('a kernel'));
        roots.push(kit);
        fs.cpSync(kit, to, { recursive: true });
        // Readable by the image's user, as COPY leaves it (root's, world-readable).
        fs.chmodSync(to, 0o755);
        for (const file of fs.readdirSync(to)) fs.chmodSync(path.join(to, file), 0o644);
      } else if (path.basename(from) === 'node_modules') {
        for (const pkg of productionPackages())
          fs.cpSync(path.join(repo, pkg), path.join(to, path.relative('node_modules', pkg)), { recursive: true });
      } else {
        fs.cpSync(from, to, { recursive: true });
      }
    }
    const dataDir = inImage(spec.env.NBDMUX_DATA_DIR!);
    fs.mkdirSync(dataDir, { mode: 0o750 });
    fs.chownSync(dataDir, uid, gid);
    dataDirs.push(dataDir);
    const imageRoot = inImage(spec.env.NBDMUX_IMAGE_ROOTS!);
    fs.mkdirSync(imageRoot, { mode: 0o755 });
    const image = makeImage(imageRoot, 'debian.img', 2 * 1024 * 1024);
    fs.chmodSync(image, 0o644);
    const outside = makeImage(root, 'outside.img', 65536);
    fs.chmodSync(outside, 0o644);

    // The image's environment; ports and bind address overridden as `-e` would, to stay on free loopback ports.
    const [httpPort, nbdPort] = [await freePort(), await freePort()];
    const env: NodeJS.ProcessEnv = {
      PATH: `${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      HOME: dataDir,
      ...Object.fromEntries(Object.entries(spec.env).map(([key, value]) => [key, mapPaths(value)])),
      NBDMUX_PORT: String(httpPort),
      NBDMUX_NBD_PORT: String(nbdPort),
      NBDMUX_BIND: '127.0.0.1',
      // In a container tini is PID 1 and reaps orphans; here, as a subreaper, it does the same.
      TINI_SUBREAPER: '1',
    };
    const asUser = ['--reuid', String(uid), '--regid', String(gid), '--init-groups', '--'];
    const command = [...spec.entrypoint, ...spec.cmd].map(mapPaths);
    const child = spawn('setpriv', [...asUser, ...command], { cwd: inImage(spec.workdir), env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      await waitFor('the daemon to listen', () => (stderr.includes('"nbdmux listening"') ? true : undefined), 20_000).catch(
        (err: Error) => {
          throw new Error(`${err.message}:\n${stderr}`);
        },
      );

      // tini, and the daemon under it, run as the image's user.
      const daemonPid = allPids().find((pid) => parentPid(pid) === child.pid);
      expect(daemonPid, 'the daemon under tini').toBeDefined();
      for (const pid of [child.pid, daemonPid]) {
        expect(fs.readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
      }
      expect(fs.readFileSync(`/proc/${daemonPid}/cmdline`, 'utf8').split('\0')).toEqual([
        'node',
        inImage(path.join(spec.workdir, 'dist/src/cli.js')),
        '',
      ]);

      const url = `http://127.0.0.1:${httpPort}`;
      const client = createNbdmuxClient({ url });
      const created = await client.exports.create.mutate({ name: 'debian', file: path.join(imageRoot, 'debian.img') });
      expect(created).toMatchObject({ name: 'debian', readonly: true, size: 2 * 1024 * 1024 });
      // Started with the image's kit, the daemon has a kernel to boot with: without one, every export says it has none.
      expect(created.boot.reason ?? '').not.toMatch(/no ramboot kit/);
      expect(sha256(await readExport(`nbd://127.0.0.1:${nbdPort}/debian`))).toBe(sha256(image));
      const refused = await client.exports.create.mutate({ name: 'outside', file: outside }).catch((err: unknown) => err);
      expect(isNbdmuxError(refused) && [refused.data?.code, refused.message]).toEqual(['BAD_REQUEST', expect.stringMatching(/image root/)]);

      // The state lives in the volume, owned by the image's user.
      const state = fs.statSync(path.join(dataDir, 'state.db'));
      expect([state.uid, state.gid]).toEqual([uid, gid]);

      const [healthBin, ...healthArgs] = spec.healthcheck;
      const health = spawnSync('setpriv', [...asUser, healthBin === 'node' ? process.execPath : healthBin!, ...healthArgs], {
        env,
        timeout: 10_000,
      });
      expect(health.status, health.stderr?.toString()).toBe(0);

      child.kill(spec.stopSignal as NodeJS.Signals);
      const code = await Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve('still running after 10 s'), 10_000))]);
      expect(code, stderr).toBe(0);
      expect(stderr).toMatch(/"msg":"stopping; live NBD connections keep being served"/);
    } finally {
      child.kill('SIGKILL');
    }

    // With the HEALTHCHECK's own port unanswered, it fails, so it cannot pass by accident.
    const [healthBin, ...healthArgs] = spec.healthcheck;
    expect(spawnSync(process.execPath, healthArgs, { env, timeout: 10_000 }).status).not.toBe(0);
    expect(healthBin).toBe('node');
  });
});

describe('deploy/compose.yml', () => {
  it('runs that image with the data volume, the images read-only, both ports and the password from an env file', () => {
    const spec = runtimeSpec();
    const parsed = spawnSync(
      'python3',
      ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))', path.join(deploy, 'compose.yml')],
      { encoding: 'utf8' },
    );
    expect(parsed.status, `${parsed.stderr} (python3-yaml comes from scripts/setup)`).toBe(0);
    const compose = JSON.parse(parsed.stdout) as {
      services: Record<string, { build: { context: string; dockerfile: string }; env_file: string[]; ports: string[]; volumes: string[] }>;
      volumes: Record<string, unknown>;
    };
    const service = Object.values(compose.services)[0]!;
    expect(path.resolve(deploy, service.build.context, service.build.dockerfile)).toBe(path.join(deploy, 'Containerfile'));
    expect(service.ports).toEqual(spec.exposed.map((port) => `${port}:${port}`));

    const [dataVolume, images] = service.volumes;
    expect(dataVolume).toBe(`nbdmux-data:${spec.env.NBDMUX_DATA_DIR}`);
    expect(Object.keys(compose.volumes)).toEqual(['nbdmux-data']);
    expect(images).toMatch(new RegExp(`:${spec.env.NBDMUX_IMAGE_ROOTS}:ro$`));

    expect(service.env_file).toEqual(['nbdmux.env']);
    const example = fs.readFileSync(path.join(deploy, `${service.env_file[0]}.example`), 'utf8');
    expect(example).toMatch(/^NBDMUX_ADMIN_PASSWORD=$/m);
    // Copied but never filled in, the example stops the daemon rather than running it with no password.
    const unfilled = spawnSync(process.execPath, [path.join(repo, 'dist/src/cli.js'), '--data-dir', tempDir()], {
      env: { ...process.env, NBDMUX_ADMIN_PASSWORD: '' },
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(unfilled.status).toBe(2);
    expect(unfilled.stderr).toMatch(/NBDMUX_ADMIN_PASSWORD must not be empty/);
  });
});

describe('deploy/nbdmux.service', () => {
  const unit = path.join(deploy, 'nbdmux.service');
  const settings = (key: string) => [...fs.readFileSync(unit, 'utf8').matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!);

  it('passes systemd-analyze verify, with no warning', () => {
    const verify = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 30_000 });
    expect(verify.error, 'systemd-analyze comes from the systemd package (scripts/setup)').toBeUndefined();
    expect([verify.status, verify.stdout, verify.stderr]).toEqual([0, '', '']);
  });

  it('starts the daemon with the ramboot kit where its header says to build it', () => {
    const kit = settings('Environment')
      .find((e) => e.startsWith(`${kitVariable}=`))
      ?.slice(kitVariable.length + 1);
    expect(kit, `Environment=${kitVariable}=DIR`).toMatch(/^\/\S+$/);
    expect(fs.readFileSync(unit, 'utf8')).toMatch(new RegExp(`^#.*\\bramboot/build-kit ${kit}$`, 'm'));
    // Read-only is enough (ProtectSystem=strict); ProtectHome and PrivateTmp would hide these.
    expect(kit).not.toMatch(/^\/(home|root|tmp|var\/tmp)(\/|$)/);
  });

  it('restarts on failure, leaves serving processes running across a restart, and is sandboxed', () => {
    expect(settings('Restart')).toEqual(['on-failure']);
    expect(settings('KillMode')).toEqual(['process']);
    expect(settings('NoNewPrivileges')).toEqual(['yes']);
    expect(settings('ProtectSystem')).toEqual(['strict']);
    const dataDir = settings('Environment')
      .find((e) => e.startsWith('NBDMUX_DATA_DIR='))!
      .split('=')[1];
    expect(settings('ReadWritePaths')).toEqual([dataDir]);
    expect(settings('User')).toEqual(['nbdmux']);
    expect(settings('ExecStart')[0]).toMatch(/^node \/opt\/nbdmux\/dist\/src\/cli\.js$/);

    const security = spawnSync('systemd-analyze', ['security', '--offline=true', unit], { encoding: 'utf8', timeout: 30_000 });
    const exposure = Number(/Overall exposure level for nbdmux\.service: (\d+\.\d+)/.exec(security.stdout)?.[1]);
    expect(exposure, security.stdout + security.stderr).toBeLessThanOrEqual(2);
  });
});
