import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootFlood } from './boot-flood.js';
import { bootStorm } from './boot-storm.js';
import { burst } from './burst.js';
import { controlPlane } from './control-plane.js';
import { eventLatency } from './event-latency.js';
import { handshake } from './handshake.js';
import { importThroughput } from './import.js';
import { goalMet, type BenchOptions, type BenchResult } from './lib/measure.js';
import { postToClient } from './post-to-client.js';
import { soak } from './soak.js';
import { throughput } from './throughput.js';

/**
 * `npm run bench` runs every benchmark and prints Markdown: absolute figures and ratios against
 * a baseline started in the same run. `--smoke` (or BENCH_SMOKE=1) runs each one tiny, only to
 * show it still completes. `--only NAME[,NAME]` picks benchmarks. Goals are reported, never
 * enforced: timings on a shared 2-vCPU machine vary by ±20%.
 */
const benchmarks: Record<string, (options: BenchOptions) => Promise<BenchResult>> = {
  throughput,
  handshake,
  'post-to-client': postToClient,
  burst,
  'control-plane': controlPlane,
  'event-latency': eventLatency,
  soak,
  'boot-storm': bootStorm,
  'boot-flood': bootFlood,
  import: importThroughput,
};

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const smoke = args.includes('--smoke') || process.env.BENCH_SMOKE === '1';
  const onlyIndex = args.indexOf('--only');
  const only = onlyIndex >= 0 ? (args[onlyIndex + 1] ?? '').split(',') : Object.keys(benchmarks);
  const unknown = only.filter((name) => !(name in benchmarks));
  if (unknown.length > 0) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; choose from ${Object.keys(benchmarks).join(', ')}`);
    return 2;
  }

  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbdmux-bench-'));
  console.log(`# nbdmux benchmarks${smoke ? ' (smoke: tiny sizes, figures meaningless)' : ''}\n`);
  console.log(machine());
  let failed = 0;
  try {
    for (const name of only) {
      const started = Date.now();
      try {
        print(await benchmarks[name]!({ smoke, workDir }), Date.now() - started);
      } catch (err) {
        failed++;
        console.log(`## ${name}: FAILED\n\n${(err as Error).stack ?? String(err)}\n`);
      }
    }
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  console.log(
    `load average at the end: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  return failed === 0 ? 0 : 1;
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  let nbdServer = 'unknown';
  try {
    nbdServer =
      /version (\S+)/.exec(execFileSync('nbd-server', ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }))?.[1] ?? nbdServer;
  } catch {
    // reported as unknown
  }
  return [
    `machine: ${os.availableParallelism()} vCPU ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}, Node ${process.version}, nbd-server ${nbdServer}`,
    `load average at the start: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    '',
  ].join('\n');
}

function print(result: BenchResult, ms: number): void {
  const lines = [`## ${result.name} (${(ms / 1000).toFixed(1)} s)`, '', '| what | median | min | max | n |', '|---|---|---|---|---|'];
  for (const r of result.rows) {
    lines.push(`| ${r.what} | ${fmt(r.median)} ${r.unit} | ${fmt(r.min)} | ${fmt(r.max)} | ${r.samples} |`);
  }
  lines.push('', '| ratio | value | goal |', '|---|---|---|');
  for (const r of result.ratios) {
    const met = goalMet(r);
    lines.push(`| ${r.what} | ${r.value.toFixed(2)} | ${r.goal === undefined ? '' : `${r.goal}: ${met ? 'met' : 'MISSED'}`} |`);
  }
  for (const note of result.notes) lines.push('', `- ${note}`);
  console.log(lines.join('\n') + '\n');
}

function fmt(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(3);
}

process.exitCode = await main();
