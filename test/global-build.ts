import { execFileSync } from 'node:child_process';
import { buildInputsHash, builtFrom } from '../scripts/build-inputs.mjs';

/**
 * The daemon and end-to-end tests run the built bin (dist/src/cli.js), exactly what an operator
 * runs, while importing helpers from src/: a dist/ older than its sources would silently test the
 * old code. Before they run, a stale or missing build is rebuilt (a current one costs a hash of
 * the sources, a few tens of milliseconds).
 */
export default function ensureCurrentBuild(): void {
  if (builtFrom() === buildInputsHash()) return;
  console.log('dist/ does not match the sources: running npm run build first');
  execFileSync('npm', ['run', 'build'], { stdio: 'inherit' });
}
