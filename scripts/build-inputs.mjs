// What a build is made of, hashed: the daemon tests run the built bin, so a build that no longer
// matches its sources must be rebuilt before they run (see test/global-build.ts). `npm run build`
// ends by writing the hash to dist/build-inputs; `node scripts/build-inputs.mjs --check` says
// whether dist/ is current.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stamp = path.join(root, 'dist', 'build-inputs');
const inputs = [
  'src',
  'web',
  'native',
  'bench',
  'testkit',
  'test/helpers',
  'scripts',
  'tsconfig.json',
  'tsconfig.web.json',
  'package-lock.json',
];

export function buildInputsHash() {
  const hash = createHash('sha256');
  const visit = (relative) => {
    const full = path.join(root, relative);
    const stat = fs.statSync(full, { throwIfNoEntry: false });
    if (!stat) return;
    if (stat.isDirectory()) {
      for (const name of fs.readdirSync(full).sort()) visit(path.join(relative, name));
    } else if (/\.(ts|mts|mjs|c|h|html|css|json)$/.test(relative)) {
      hash.update(`${relative}\0`).update(fs.readFileSync(full)).update('\0');
    }
  };
  for (const input of inputs) visit(input);
  return hash.digest('hex');
}

export function builtFrom() {
  try {
    return fs.readFileSync(stamp, 'utf8').trim();
  } catch {
    return null;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--check')) {
    const current = builtFrom() === buildInputsHash();
    console.log(current ? 'dist/ is current' : 'dist/ is stale: run npm run build');
    process.exitCode = current ? 0 : 1;
  } else {
    fs.mkdirSync(path.dirname(stamp), { recursive: true });
    fs.writeFileSync(stamp, `${buildInputsHash()}\n`);
  }
}
