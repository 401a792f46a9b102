import { spawn } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { bootInspectionSchema, nothingFound, type BootInspection } from './result.js';
import type { WorkerRequest } from './worker-protocol.js';

export { bootSummaryOf, bootSummarySchema, type BootInspection, type BootSummary } from './result.js';

const workerFile = fileURLToPath(new URL('./worker.js', import.meta.url));

export interface InspectLimits {
  timeoutMs: number;
  /** V8 heap of the child, MiB. */
  heapMiB: number;
  /** Its answer, bytes: one JSON line, a few KiB when sane. */
  maxOutputBytes: number;
}

export const defaultInspectLimits: InspectLimits = { timeoutMs: 20_000, heapMiB: 128, maxOutputBytes: 256 * 1024 };

export interface InspectRequest extends Omit<WorkerRequest, 'size'> {
  /**
   * The image: a descriptor the caller holds (a pinned export's; `size` needed for a block
   * device), or a path opened read-only for the inspection.
   */
  image: { fd: number; size?: number } | { file: string };
}

/**
 * Inspects a disk image in a child process bounded in time, memory and output: what it boots
 * (see BootInspection). Never rejects for anything the image holds: a hostile or damaged image,
 * a hang or a crash gives `ready: false` with the reason.
 */
export async function inspectBootImage(request: InspectRequest, limits: InspectLimits = defaultInspectLimits): Promise<BootInspection> {
  const ownFd = 'file' in request.image ? openSync(request.image.file, constants.O_RDONLY | constants.O_NONBLOCK) : null;
  const fd = ownFd ?? ('fd' in request.image ? request.image.fd : -1);
  const workerRequest: WorkerRequest = { requiredModules: request.requiredModules, kernelVersion: request.kernelVersion, size: 'size' in request.image ? request.image.size : undefined };
  try {
    const answer = await runWorker(fd, workerRequest, limits);
    const parsed = bootInspectionSchema.safeParse(answer.ok ? safeJson(answer.output) : undefined);
    if (parsed.success) return parsed.data;
    return failed(answer.ok ? 'the inspection answered something unreadable' : answer.reason);
  } finally {
    if (ownFd !== null) closeSync(ownFd);
  }
}

type WorkerAnswer = { ok: true; output: string } | { ok: false; reason: string };

function runWorker(fd: number, request: WorkerRequest, limits: InspectLimits): Promise<WorkerAnswer> {
  return new Promise((resolve) => {
    // Its own process group: on timeout the whole group goes, debugfs included.
    const child = spawn(process.execPath, [`--max-old-space-size=${limits.heapMiB}`, workerFile, JSON.stringify(request)], {
      stdio: ['ignore', 'pipe', 'pipe', fd],
      detached: true,
    });
    let output = '';
    let stderr = '';
    let stopped: string | null = null;
    const stop = (reason: string) => {
      stopped ??= reason;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(() => stop(`the inspection took longer than ${limits.timeoutMs / 1000} s and was stopped`), limits.timeoutMs);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.length > limits.maxOutputBytes) stop(`the inspection answered more than ${limits.maxOutputBytes} bytes and was stopped`);
    });
    child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4096)));
    child.on('error', (err) => stop(`the inspection could not start: ${err.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (stopped) resolve({ ok: false, reason: stopped });
      else if (code !== 0) resolve({ ok: false, reason: `the inspection failed (${signal ?? `exit ${code}`}): ${lastLine(stderr)}` });
      else resolve({ ok: true, output });
    });
  });
}

function failed(reason: string): BootInspection {
  return { ...nothingFound, reason };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1)?.slice(0, 500) ?? '';
}
