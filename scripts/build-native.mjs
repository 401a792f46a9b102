#!/usr/bin/env node
// Builds native/*.c into dist/native/ (part of `npm run build`): the fast-start shim
// (native/skip-dh-params.c, a library preloaded into nbd-server), the hooks preloaded beside it
// (native/report-hooks.c and config-hooks.c: prerun and postrun without a shell, the config read
// without GLib's discarded errors), the warm pool's hand-off shim
// (native/warm-pool.c, preloaded into pool processes), the imports' sparse writer
// (native/sparse-write.c, a program) and the postrun's count of bytes sent (native/socket-sent.c,
// a program). With no C compiler at all the build goes on: nbdmux then starts nbd-server the
// plain, slower way and says so in its log and health, imports fail with tool-failed, saying to
// build with a compiler, and bytes sent are counted from /proc as before.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(root, 'dist', 'native');
const compiler = process.env.CC || 'cc';

fs.mkdirSync(outDir, { recursive: true });
/** Each source, as a shared library or a program, and what is lost without a compiler. */
const targets = [
  {
    source: 'skip-dh-params.c',
    output: 'skip-dh-params.so',
    flags: ['-shared', '-fPIC'],
    without: 'nbd-server will start without the fast-start shim',
  },
  {
    source: ['report-hooks.c', 'config-hooks.c'],
    output: 'nbd-server-hooks.so',
    flags: ['-shared', '-fPIC'],
    without: "each connection's prerun and postrun run in a shell, and its config is read the slower way",
  },
  {
    source: 'warm-pool.c',
    output: 'warm-pool.so',
    flags: ['-shared', '-fPIC'],
    without: 'the warm pool stays empty and every connection spawns its own nbd-server',
  },
  { source: 'sparse-write.c', output: 'nbdmux-sparse-write', flags: [], without: 'image imports will fail until it is built' },
  {
    source: 'socket-sent.c',
    output: 'nbdmux-socket-sent',
    flags: [],
    without: "bytes sent are counted from each nbd-server's wchar, which also counts what clients write",
  },
];
for (const { source, output, flags, without } of targets) {
  const sources = [source].flat().map((file) => path.join(root, 'native', file));
  const args = [...flags, '-O2', '-Wall', '-Wextra', '-o', path.join(outDir, output), ...sources];
  const result = spawnSync(compiler, args, { stdio: 'inherit' });
  if (result.error && result.error.code === 'ENOENT') {
    console.warn(`build-native: no C compiler ("${compiler}"): ${[source].flat().join(' and ')} not built; ${without}`);
    continue;
  }
  if (result.status !== 0) {
    console.error(`build-native: ${compiler} ${args.join(' ')} failed`);
    process.exit(1);
  }
}
