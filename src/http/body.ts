import type http from 'node:http';
import { TRPCError } from '@trpc/server';

/** A machine or profile carries up to three cloud-init documents of 64 KiB each (rules/cloud-config.ts), JSON-escaped. */
export const maxBodyBytes = 256 * 1024;
export const bodyTooLargeMessage = `the body is larger than ${maxBodyBytes} bytes`;

/** Reads a request body of at most maxBodyBytes, refusing a larger one before reading it all. */
export async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const tooLarge = () => new TRPCError({ code: 'PAYLOAD_TOO_LARGE', message: bodyTooLargeMessage });
  if (Number(req.headers['content-length'] ?? 0) > maxBodyBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      length += chunk.length;
      if (length > maxBodyBytes) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (err) {
    // Cut off by the request timeout, or dropped by the client: a client's failure, not the daemon's.
    if ((err as NodeJS.ErrnoException).code === 'ECONNRESET') {
      throw new TRPCError({ code: 'CLIENT_CLOSED_REQUEST', message: 'the connection closed before the whole body arrived', cause: err });
    }
    throw err;
  }
  return Buffer.concat(chunks);
}

/** The media type of a request body, without parameters. */
export function contentType(req: http.IncomingMessage): string | undefined {
  return req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
}

/** Reads a body that must be JSON, with the error a curl user needs when it is not. */
export async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const type = contentType(req);
  if (type !== 'application/json') {
    throw new TRPCError({
      code: 'UNSUPPORTED_MEDIA_TYPE',
      message: `the body must be JSON: send the header "Content-Type: application/json" (got ${type ?? 'none'})`,
    });
  }
  const body = await readBody(req);
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new TRPCError({ code: 'PARSE_ERROR', message: `the body is not valid JSON: ${(err as Error).message}` });
  }
}
