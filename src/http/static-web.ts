import fs from 'node:fs/promises';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';

/** The built dashboard (npm run build bundles web/ into dist/web). */
const webRoot = fileURLToPath(new URL('../../web/', import.meta.url));

/** The dashboard's files: a fixed list, so no request path ever reaches the file system. */
const files: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.js.map': { file: 'app.js.map', type: 'application/json' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

export async function serveWeb(req: http.IncomingMessage, res: http.ServerResponse, pathname: string): Promise<boolean> {
  const entry = files[pathname];
  if (!entry || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
  const body = await fs.readFile(webRoot + entry.file);
  res.writeHead(200, { 'content-type': entry.type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' });
  res.end(req.method === 'HEAD' ? undefined : body);
  return true;
}
