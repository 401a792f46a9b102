import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { poll, type Server } from './servers.js';

export interface BenchOptions {
  smoke: boolean;
  /** Scratch space for images, data dirs and configs; removed at the end. */
  workDir: string;
}

/** What one benchmark contributes to the report. */
export interface BenchResult {
  name: string;
  rows: Row[];
  ratios: Ratio[];
  notes: string[];
}

export interface Row {
  what: string;
  median: number;
  min: number;
  max: number;
  samples: number;
  unit: string;
}

export interface Ratio {
  what: string;
  value: number;
  /** e.g. '<= 1.5'; the bench reports whether it is met and never fails on it. */
  goal?: string;
}

/**
 * Runs `measure` for every variant, `rounds` times, rotating which variant goes first in each
 * round so that neither warm-up nor drifting machine load favours one side.
 */
export async function alternate<V extends string>(rounds: number, variants: readonly V[], measure: (variant: V) => Promise<number>): Promise<Record<V, number[]>> {
  const samples = Object.fromEntries(variants.map((v) => [v, [] as number[]])) as Record<V, number[]>;
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < variants.length; i++) {
      const variant = variants[(round + i) % variants.length]!;
      samples[variant].push(await measure(variant));
    }
  }
  return samples;
}

export function row(what: string, values: number[], unit: string): Row {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { what, median, min: sorted[0]!, max: sorted.at(-1)!, samples: values.length, unit };
}

export function ratio(what: string, numerator: Row, denominator: Row, goal?: string): Ratio {
  return { what, value: numerator.median / denominator.median, ...(goal !== undefined && { goal }) };
}

export function goalMet(r: Ratio): boolean | null {
  const match = /^(<=|>=) ([\d.]+)$/.exec(r.goal ?? '');
  if (!match) return null;
  return match[1] === '<=' ? r.value <= Number(match[2]) : r.value >= Number(match[2]);
}

/** CPU seconds a process used, its own plus every child it has reaped (utime+stime+cutime+cstime). */
export function cpuSeconds(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
  // After the command name: state is field 0, utime..cstime are fields 11..14.
  return (fields[11]! + fields[12]! + fields[13]! + fields[14]!) / clockTicksPerSecond;
}

/** CPU of each server once every process it started for a client has exited and been reaped. */
export async function settledCpu<K extends string>(servers: Record<K, Server>): Promise<Record<K, number>> {
  const result = {} as Record<K, number>;
  for (const [key, server] of Object.entries(servers) as Array<[K, Server]>) {
    await poll(`${server.label} to reap its children`, () => (liveChildren(server.pid).length === 0 ? true : undefined));
    result[key] = cpuSeconds(server.pid);
  }
  return result;
}

/** Linux reports process times in USER_HZ, 100 on every common configuration. */
const clockTicksPerSecond = 100;

export function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** Children of a process that have not been reaped yet (zombies included). */
export function liveChildren(pid: number): number[] {
  const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return text === '' ? [] : text.split(' ').map(Number);
}

/** Runs a client program to completion; rejects on a non-zero exit. Debian's python3 for nbdsh. */
export function runClient(command: string, args: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${stderr.trim()}`))));
  });
}

export function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}
