import type http from 'node:http';
import { TRPC_ERROR_CODES_BY_KEY, type TRPC_ERROR_CODE_KEY } from '@trpc/server/rpc';

/**
 * A refusal made before a request reaches a procedure (authentication, routing, a crash), in
 * the error shape its caller already handles: tRPC's envelope under /trpc, where the typed
 * client reads it as any other error; `{error: {code, message}}` everywhere else.
 */
export function sendJsonError(
  res: http.ServerResponse,
  pathname: string,
  status: number,
  code: TRPC_ERROR_CODE_KEY,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) return void res.end();
  const body = pathname.startsWith('/trpc/')
    ? { error: { message, code: TRPC_ERROR_CODES_BY_KEY[code], data: { code, httpStatus: status } } }
    : { error: { code, message } };
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(`${JSON.stringify(body)}\n`);
}
