import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import { pipeline } from 'node:stream/promises';
import { sendJsonError } from './reply.js';
import { errorText, type Logger } from '../log.js';
import type { BootFile } from '../boot/artifacts.js';

/** True when the client already holds the entity tagged `etag` (If-None-Match, weak comparison). */
function clientHas(req: http.IncomingMessage, etag: string): boolean {
  const header = req.headers['if-none-match'];
  if (header === undefined) return false;
  return header.split(',').some((tag) => {
    const trimmed = tag.trim();
    return trimmed === '*' || trimmed.replace(/^W\//, '') === etag;
  });
}

/** Sends a script; returns the status sent. */
export function sendText(req: http.IncomingMessage, res: http.ServerResponse, text: string): number {
  const body = Buffer.from(text, 'utf8');
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
  // Scripts name the exports and hosts of the moment: a machine must revalidate each time.
  const headers = { etag, 'cache-control': 'no-cache' };
  if (clientHas(req, etag)) {
    res.writeHead(304, headers).end();
    return 304;
  }
  res.writeHead(200, { ...headers, 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length });
  res.end(req.method === 'HEAD' ? undefined : body);
  return 200;
}

/** Streams a boot file, never holding it whole in memory; `served` is told the status before the body goes out. */
export async function sendFile(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  file: Extract<BootFile, { ok: true }>,
  pathname: string,
  log: Logger,
  served: (status: number) => void,
): Promise<void> {
  const headers = { etag: file.etag, 'cache-control': 'no-cache' };
  if (clientHas(req, file.etag)) {
    res.writeHead(304, headers).end();
    return served(304);
  }
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file.path, 'r');
  } catch (err) {
    sendJsonError(
      res,
      pathname,
      503,
      'SERVICE_UNAVAILABLE',
      `${pathname} cannot be read just now (${(err as NodeJS.ErrnoException).code ?? String(err)}); try again`,
      { 'retry-after': '1' },
    );
    return;
  }
  try {
    // The length announced must be the length sent: a file replaced since it was judged is refused, not cut short.
    if ((await handle.stat()).size !== file.size) {
      sendJsonError(res, pathname, 503, 'SERVICE_UNAVAILABLE', `${pathname} changed just now; try again`, { 'retry-after': '1' });
      return;
    }
    res.writeHead(200, { ...headers, 'content-type': 'application/octet-stream', 'content-length': file.size });
    served(200);
    if (req.method === 'HEAD' || file.size === 0) return void res.end();
    await pipeline(handle.createReadStream({ start: 0, end: file.size - 1, autoClose: false }), res);
  } catch (err) {
    // A machine that stops reading (reset, reboot) ends its download; nothing else is affected.
    if ((err as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE')
      log.warn('boot file not sent whole', { path: pathname, error: errorText(err) });
    res.destroy();
  } finally {
    await handle.close();
  }
}
