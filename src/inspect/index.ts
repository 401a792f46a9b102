import { fileURLToPath } from 'node:url';
import { parseAnswer, runBoundedChild, withImageFd, type ChildLimits, type ImageSource } from '../bounded-child.js';
import { bootInspectionSchema, nothingFound, type BootInspection } from './result.js';
import type { WorkerRequest } from './worker-protocol.js';

export { bootSummaryOf, bootSummarySchema, type BootInspection, type BootSummary } from './result.js';

const workerFile = fileURLToPath(new URL('./worker.js', import.meta.url));

export const defaultInspectLimits: ChildLimits = { timeoutMs: 20_000, heapMiB: 128, maxOutputBytes: 256 * 1024 };

export interface InspectRequest extends Omit<WorkerRequest, 'size' | 'deviceModules'> {
  deviceModules?: string[];
  image: ImageSource;
}

/**
 * Inspects a disk image in a child process bounded in time, memory and output: what it boots
 * (see BootInspection). Never rejects for anything the image holds: a hostile or damaged image,
 * a hang or a crash gives `ready: false` with the reason.
 */
export async function inspectBootImage(request: InspectRequest, limits: ChildLimits = defaultInspectLimits): Promise<BootInspection> {
  const workerRequest: WorkerRequest = {
    requiredModules: request.requiredModules,
    deviceModules: request.deviceModules ?? [],
    kernelVersion: request.kernelVersion,
    size: 'size' in request.image ? request.image.size : undefined,
  };
  const answer = await withImageFd(request.image, (fd) => runBoundedChild('the inspection', workerFile, workerRequest, fd, limits));
  if (!answer.ok) return { ...nothingFound, reason: answer.reason };
  const parsed = bootInspectionSchema.safeParse(parseAnswer(answer.output));
  return parsed.success ? parsed.data : { ...nothingFound, reason: 'the inspection answered something unreadable' };
}
