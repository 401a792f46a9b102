import { z } from 'zod';

/** What `inspectBootImage` asks its child; the image itself is descriptor 3. */
export const workerRequestSchema = z.object({
  size: z.number().int().positive().optional(),
  requiredModules: z.array(z.string().max(100)).max(200),
  /** NIC drivers of the kit (Kit.deviceModules): a machine needs only its own NIC's, so the image may lack some. */
  deviceModules: z.array(z.string().max(100)).max(200).default([]),
  kernelVersion: z.string().max(100).optional(),
});
export type WorkerRequest = z.infer<typeof workerRequestSchema>;
