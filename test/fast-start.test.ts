import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { configEnablesTls, detectFastStart } from '../src/supervisor/fast-start.js';
import { readBytesWritten } from '../src/supervisor/proc.js';
import { api, killEverything, startDaemon, tempDir, waitFor, writeShimlessNbdServer, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, readExport, sha256, startSlowReader } from '../testkit/nbd.js';
import { parentPid, servingPids } from '../testkit/proc.js';
import { run } from '../testkit/process.js';
import { trpcClient } from './helpers/trpc.js';

/** The shim as `npm run build` leaves it (the source tree holds only native/skip-dh-params.c). */
const builtShim = fileURLToPath(new URL('../dist/native/skip-dh-params.so', import.meta.url));
const builtHooks = fileURLToPath(new URL('../dist/native/nbd-server-hooks.so', import.meta.url));

function script(text: string): string {
  const file = path.join(tempDir('nbdmux-bin-'), 'nbd-server');
  fs.writeFileSync(file, text, { mode: 0o755 });
  return file;
}

/** The NBD greeting nbd-server writes first: NBDMAGIC, IHAVEOPT, 2 bytes of flags. */
const greetingBytes = 18;

/**
 * The nbd-server processes a daemon started, with the bytes each has written so far. Only its
 * own children: a serving process forks to run its prerun, and until that child execs the shell
 * it carries nbd-server's command line and has written nothing, like a process still starting.
 */
function nbdServerProcesses(daemon: RunningDaemon): Array<{ pid: number; written: number }> {
  const found = [];
  for (const pid of servingPids(daemon.dataDir)) {
    const written = readBytesWritten(pid);
    if (parentPid(pid) === daemon.child.pid && written !== null) found.push({ pid, written });
  }
  return found;
}

describe('fast start detection, on the installed nbd-server', () => {
  it('enables the built shim: the loader binds the DH parameter generation to it', async () => {
    const result = await detectFastStart('nbd-server', builtShim, process.env, builtHooks);
    expect(result).toEqual({ enabled: true, env: { LD_PRELOAD: `${builtShim}:${builtHooks}` } });
  });

  it('preloads the shim alone when the report hooks were not built: a shell then runs prerun and postrun', async () => {
    const result = await detectFastStart('nbd-server', builtShim, process.env, '/nonexistent/nbd-server-hooks.so');
    expect(result).toEqual({ enabled: true, env: { LD_PRELOAD: builtShim } });
  });

  it('falls back when the shim file is missing', async () => {
    const result = await detectFastStart('nbd-server', '/nonexistent/skip-dh-params.so');
    expect(result).toEqual({ enabled: false, reason: expect.stringMatching(/missing: run npm run build/) });
  });

  it('falls back when the shim is not a shared object, quoting the loader', async () => {
    const notElf = path.join(tempDir(), 'skip-dh-params.so');
    fs.writeFileSync(notElf, 'not an ELF file\n');
    const result = await detectFastStart('nbd-server', notElf);
    expect(result).toEqual({ enabled: false, reason: expect.stringMatching(/does not bind.*cannot be preloaded/) });
  });

  it('falls back when the real nbd-server runs but the shim does not reach it', async () => {
    // The loader's report, not the file's presence, decides: here the symbol still binds to libgnutls.
    const result = await detectFastStart(writeShimlessNbdServer(tempDir('nbdmux-bin-')), builtShim);
    expect(result).toEqual({ enabled: false, reason: expect.stringMatching(/does not bind.*still resolves to .*libgnutls/) });
  });

  it('falls back for a program that claims to be nbd-server but never calls the function', async () => {
    // A fake: only a stand-in can show a binary without GnuTLS; it proves -V output alone is not trusted.
    const result = await detectFastStart(script('#!/bin/sh\necho "This is nbd-server version 3.24"\n'), builtShim);
    expect(result).toEqual({ enabled: false, reason: expect.stringMatching(/does not call gnutls_dh_params_generate2/) });
  });

  it('falls back when something else already defines the function (another preloaded library)', async () => {
    const other = path.join(tempDir(), 'other-preload.so');
    fs.copyFileSync(builtShim, other);
    const result = await detectFastStart('nbd-server', builtShim, { ...process.env, LD_PRELOAD: other });
    expect(result).toEqual({ enabled: false, reason: `gnutls_dh_params_generate2 resolves to ${other}, not to libgnutls` });
  });

  it('refuses the shim for a program that hands its DH parameters to GnuTLS', async () => {
    // A stand-in compiled here, linked to the real libgnutls: nbd-server 3.24 never installs its
    // parameters, so only a fake can show a binary that does (and would break without them).
    const dir = tempDir();
    fs.writeFileSync(
      path.join(dir, 'uses-dh.c'),
      [
        '#include <stdio.h>',
        'int gnutls_dh_params_generate2(void *params, unsigned int bits);',
        'int gnutls_certificate_set_dh_params(void *credentials, void *params);',
        'int main(int argc, char **argv) {',
        '  (void)argv;',
        '  puts("This is nbd-server version 3.24");',
        '  if (argc > 99) { gnutls_dh_params_generate2(0, 0); gnutls_certificate_set_dh_params(0, 0); }',
        '  return 0;',
        '}',
      ].join('\n'),
    );
    const bin = path.join(dir, 'nbd-server');
    const compiled = await run('cc', ['-o', bin, path.join(dir, 'uses-dh.c'), '-l:libgnutls.so.30']);
    expect(compiled.stderr).toBe('');
    const result = await detectFastStart(bin, builtShim);
    expect(result).toEqual({
      enabled: false,
      reason: expect.stringMatching(/hands its DH parameters to GnuTLS \(gnutls_certificate_set_dh_params\)/),
    });
  });

  it('treats a config with a TLS key or certificate as needing the real DH parameters', () => {
    expect(configEnablesTls('[generic]\nport = 0\nkeyfile = /etc/nbd/key.pem\ncertfile = /etc/nbd/cert.pem\n')).toBe(true);
    expect(configEnablesTls('[generic]\nport = 0\n\n[disk]\nexportname = /srv/disk.img\n')).toBe(false);
  });
});

describe('nbdmux with and without fast start', () => {
  const dataDirs: string[] = [];
  afterEach(() => killEverything(dataDirs.splice(0)));

  it('preloads the shim into serving nbd-server processes, which serve the exact bytes', async () => {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const images = tempDir('nbdmux-images-');
    const image = makeImage(images, 'disk.img', 4 * 1024 * 1024 + 512);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);
    expect(await trpcClient(daemon.url).system.health.query()).toMatchObject({ ok: true, fastStart: true, fastStartReason: null });
    expect(configEnablesTls(fs.readFileSync(path.join(daemon.dataDir, 'nbd-server.conf'), 'utf8'))).toBe(false);

    const reader = startSlowReader(daemon.nbdUri('disk'), path.join(images, 'stop'));
    await reader.connected;
    const [serving] = nbdServerProcesses(daemon);
    expect(serving).toBeDefined();
    expect(fs.readFileSync(`/proc/${serving!.pid}/maps`, 'utf8')).toContain(builtShim);
    expect(fs.readFileSync(`/proc/${serving!.pid}/maps`, 'utf8')).toContain(builtHooks);
    expect((await reader.finish()).sha256).toBe(sha256(image));
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));
  });

  it("runs each connection's prerun and postrun inside nbd-server, with no shell, and still counts every byte", async () => {
    const daemon = await startDaemon();
    dataDirs.push(daemon.dataDir);
    const image = makeImage(tempDir('nbdmux-images-'), 'disk.img', 3 * 1024 * 1024 + 512);
    // An allow list: the prerun must read the daemon's verdict before the client is served.
    const created = await api(daemon, 'POST', '/exports', { name: 'disk', file: image, allow: ['127.0.0.1'] });
    expect(created.status).toBe(201);
    const traceFile = path.join(tempDir(), 'execve.trace');
    const strace = spawn('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', traceFile, '-p', String(daemon.child.pid)]);
    await waitFor('strace to attach', () => (fs.existsSync(traceFile) ? true : undefined), 10_000, 20);
    await new Promise((resolve) => setTimeout(resolve, 300));

    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));
    const row = await waitFor('the connection to be counted', async () => {
      const rows = await trpcClient(daemon.url).connections.list.query({ limit: 10 });
      return rows.find((r) => r.exportName === 'disk' && !r.live);
    });
    strace.kill('SIGINT');
    await new Promise((resolve) => strace.once('exit', resolve));

    const programs = [...fs.readFileSync(traceFile, 'utf8').matchAll(/execve\("([^"]+)"/g)].map((match) => match[1]);
    expect(programs).toContain(fs.realpathSync('/usr/bin/nbd-server'));
    expect(programs.filter((program) => /\/(sh|dash|bash|nbdmux-socket-sent)$/.test(program!))).toEqual([]);
    expect(row).toMatchObject({ outcome: 'closed', error: null });
    // What the client's TCP acknowledged: the image, plus the protocol's replies (16 bytes per read).
    expect(row.bytesSent).toBeGreaterThanOrEqual(fs.statSync(image).size);
    expect(row.bytesSent).toBeLessThanOrEqual(fs.statSync(image).size * 1.01);
  });

  it('falls back to plain starts with one warning and a reason in health, still serving the exact bytes', async () => {
    const daemon = await startDaemon({ args: ['--nbd-server-bin', writeShimlessNbdServer(tempDir('nbdmux-bin-'))] });
    dataDirs.push(daemon.dataDir);
    const warnings = daemon
      .output()
      .split('\n')
      .filter((line) => line.includes('"fast start off'));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 'warn', reason: expect.stringMatching(/does not bind/) });
    expect(await trpcClient(daemon.url).system.health.query()).toMatchObject({
      ok: true,
      fastStart: false,
      fastStartReason: expect.stringMatching(/does not bind/),
    });

    const image = makeImage(tempDir('nbdmux-images-'), 'disk.img', 2 * 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);
    expect(sha256(await readExport(daemon.nbdUri('disk')))).toBe(sha256(image));
  });

  it('without the shim, never has more nbd-server processes computing their start than the bound (2 per CPU)', async () => {
    // The whole burst comes from 127.0.0.1 at once: lift the pending cap of one address.
    const daemon = await startDaemon({
      args: ['--nbd-server-bin', writeShimlessNbdServer(tempDir('nbdmux-bin-')), '--nbd-max-pending-per-client', '255'],
    });
    dataDirs.push(daemon.dataDir);
    const image = makeImage(tempDir('nbdmux-images-'), 'disk.img', 1024 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'disk', file: image })).status).toBe(201);

    // A process that has written less than the greeting has not greeted its client: it is still
    // starting (0.1-0.4 s of DH parameters each here), and only a start holds a slot of the bound.
    // (Node's child writes one byte between fork and exec, so "nothing written" never holds.)
    let mostStarting = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const starting = nbdServerProcesses(daemon).filter((p) => p.written < greetingBytes).length;
        mostStarting = Math.max(mostStarting, starting);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    const clients = 3 * 2 * os.availableParallelism();
    const results = await Promise.all(Array.from({ length: clients }, () => run('nbdinfo', ['--size', daemon.nbdUri('disk')])));
    sampling = false;
    await sampler;

    expect(results.map((r) => r.code)).toEqual(Array(clients).fill(0));
    expect(mostStarting).toBeLessThanOrEqual(2 * os.availableParallelism());
    // Proof the sampler saw the burst at all: several starts at once, not one at a time.
    expect(mostStarting).toBeGreaterThanOrEqual(2);
  });
});
