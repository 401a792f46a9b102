import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { run } from '../testkit/process.js';

const bench = fileURLToPath(new URL('../dist/bench/index.js', import.meta.url));

/** The benchmarks run tiny here only to show they still work end to end; no figure is checked. */
describe('benchmark suite, smoke mode', () => {
  it('runs every benchmark to completion', async () => {
    const result = await run(process.execPath, [bench, '--smoke'], { timeoutMs: 110_000 });
    const output = result.stdout.toString();
    expect(result.stderr).toBe('');
    expect(output).not.toMatch(/FAILED/);
    for (const heading of [
      'data path',
      'connect + handshake',
      'POST /exports',
      'burst of',
      'control plane',
      'soak for',
      'boot storm',
      'boot-route flood',
    ]) {
      expect(output).toContain(`## ${heading}`);
    }
    expect(result.code).toBe(0);
  }, 120_000);
});
