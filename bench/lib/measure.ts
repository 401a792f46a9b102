import { waitFor } from '../../testkit/daemon.js';
import { cmdline, cpuSeconds, liveChildren } from '../../testkit/proc.js';
import type { Server } from './servers.js';

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
export async function alternate<V extends string>(
  rounds: number,
  variants: readonly V[],
  measure: (variant: V) => Promise<number>,
): Promise<Record<V, number[]>> {
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

/** CPU of each server once every process it started for a client has exited and been reaped. */
export async function settledCpu<K extends string>(servers: Record<K, Server>): Promise<Record<K, number>> {
  const result = {} as Record<K, number>;
  for (const [key, server] of Object.entries(servers) as Array<[K, Server]>) {
    // Warm pool processes still waiting serve nobody: their CPU is counted once one is handed a client and reaped.
    const serving = () => liveChildren(server.pid).filter((pid) => !cmdline(pid)?.includes('.unassigned-warm-pool-process'));
    await waitFor(`${server.label} to reap its children`, () => (serving().length === 0 ? true : undefined), 30_000, 10);
    result[key] = cpuSeconds(server.pid);
  }
  return result;
}

export function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}
