import type http from 'node:http';
import { sendJsonError } from './reply.js';
import { bodyTooLargeMessage, maxBodyBytes } from './body.js';

/**
 * Answers `Expect: 100-continue` ourselves instead of letting Node send `100 Continue` to every
 * request: a body declared over the limit gets 413 before the client sends a byte of it. Left to
 * Node, the client was told to go on, streamed megabytes into a connection the daemon was already
 * closing, and saw it reset instead of the 413 (curl sends this header for any large body).
 */
export function answerExpectContinue(server: http.Server): void {
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (Number(req.headers['content-length'] ?? 0) > maxBodyBytes) {
      const pathname = req.url?.startsWith('/') ? req.url.split('?')[0]! : '';
      // Closed after the answer: a client that sends its body anyway must not have it read as the next request.
      return sendJsonError(res, pathname, 413, 'PAYLOAD_TOO_LARGE', bodyTooLargeMessage, { connection: 'close' });
    }
    res.writeContinue();
    // With a 'checkContinue' listener Node no longer emits 'request' for this one: hand it on as any other.
    server.emit('request', req, res);
  });
}
