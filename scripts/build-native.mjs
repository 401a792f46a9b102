#!/usr/bin/env node
// Builds native/*.c into dist/native/*.so (part of `npm run build`). The only native piece is
// the fast-start shim; see native/skip-dh-params.c. With no C compiler at all the build goes on:
// nbdmux then starts nbd-server the plain, slower way and says so in its log and health.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(root, 'dist', 'native');
const compiler = process.env.CC || 'cc';

fs.mkdirSync(outDir, { recursive: true });
for (const source of fs.readdirSync(path.join(root, 'native')).filter((f) => f.endsWith('.c'))) {
  const output = path.join(outDir, source.replace(/\.c$/, '.so'));
  const args = ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-o', output, path.join(root, 'native', source)];
  const result = spawnSync(compiler, args, { stdio: 'inherit' });
  if (result.error && result.error.code === 'ENOENT') {
    console.warn(`build-native: no C compiler ("${compiler}"): ${source} not built; nbd-server will start without the fast-start shim`);
    continue;
  }
  if (result.status !== 0) {
    console.error(`build-native: ${compiler} ${args.join(' ')} failed`);
    process.exit(1);
  }
}
