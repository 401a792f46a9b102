import { z } from 'zod';

/** What `inspectBootImage` asks its child; the image itself is descriptor 3. */
export const workerRequestSchema = z.object({
  size: z.number().int().positive().optional(),
  requiredModules: z.array(z.string().max(100)).max(200),
  kernelVersion: z.string().max(100).optional(),
});
export type WorkerRequest = z.infer<typeof workerRequestSchema>;
