import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createLogger, type Logger } from '../src/log.js';
import { Importer, type ImportError, type ImporterOptions } from '../src/images/importer.js';
import type { ImportedImage } from '../src/images/pipeline.js';
import type { ImportProgress } from '../src/images/progress.js';
import { runOrThrow } from './process.js';

/**
 * A test disk image: random runs (any misplaced byte shows) between zero runs (a sparse store
 * or a sparse conversion shows). It starts with zeros, so no random prefix looks like a magic number.
 */
export function makeTestImage(dir: string, name: string, mib: number): string {
  const file = path.join(dir, name);
  const fd = fs.openSync(file, 'w');
  try {
    for (let i = 0; i < mib; i++) fs.writeSync(fd, i % 3 === 0 ? Buffer.alloc(1 << 20) : crypto.randomBytes(1 << 20));
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

export function sha256Of(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** `image` packed the way publishers ship it, with the real tools; returns the new file. */
export async function pack(image: string, as: 'xz' | 'zst' | 'gz' | 'qcow2' | 'vmdk' | 'vhdx' | 'vdi' | 'qcow2.xz'): Promise<string> {
  const out = `${image}.${as}`;
  switch (as) {
    case 'xz':
    case 'zst':
    case 'gz': {
      const tool = { xz: ['xz', '-T1', '-1'], zst: ['zstd', '-q', '-1'], gz: ['gzip', '-1'] }[as];
      await runOrThrow('sh', ['-c', `${tool.join(' ')} -c "$1" > "$2"`, 'pack', image, out]);
      return out;
    }
    case 'qcow2':
    case 'vmdk':
    case 'vhdx':
    case 'vdi':
      await runOrThrow('qemu-img', ['convert', '-f', 'raw', '-O', as, image, out]);
      return out;
    case 'qcow2.xz':
      await runOrThrow('xz', ['-T1', '-1', '-k', await pack(image, 'qcow2')]);
      return out;
  }
}

export type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface ImageServer {
  url(route: string): string;
  /** Requests seen so far, by path. */
  hits: string[];
  close(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 (free port) answering each path with its route; 404 otherwise. */
export async function startImageServer(routes: Record<string, Route>): Promise<ImageServer> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url!);
    const route = routes[req.url!];
    if (route) return route(req, res);
    res.writeHead(404).end('not here');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: (route) => `http://127.0.0.1:${port}${route}`,
    hits,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Serves a file whole, with its Content-Length (or chunked, without one). */
export function serveFile(file: string, { contentLength = true } = {}): Route {
  return (_req, res) => {
    res.writeHead(200, contentLength ? { 'content-length': fs.statSync(file).size } : {});
    fs.createReadStream(file).pipe(res);
  };
}

/** Announces a file's whole length, sends `sendBytes` of it, then drops the connection. */
export function serveTruncated(file: string, sendBytes: number): Route {
  return (_req, res) => {
    res.writeHead(200, { 'content-length': fs.statSync(file).size });
    res.write(fs.readFileSync(file).subarray(0, sendBytes), () => res.socket?.destroy());
  };
}

/** Sends the head and some bytes, then nothing, holding the connection open. */
export function serveStalled(file: string, sendBytes: number): Route {
  return (_req, res) => {
    res.writeHead(200, { 'content-length': fs.statSync(file).size });
    res.write(fs.readFileSync(file).subarray(0, sendBytes));
  };
}

export function redirect(to: string): Route {
  return (_req, res) => res.writeHead(302, { location: to }).end();
}

export interface TestImporter {
  importer: Importer;
  logs: string[];
}

export function testImporter(storeDir: string, options: Partial<Omit<ImporterOptions, 'storeDir' | 'log'>> = {}): TestImporter {
  const logs: string[] = [];
  const log: Logger = createLogger('debug', (line) => logs.push(line));
  const importer = new Importer({ maxImports: 2, imageRoots: [], ...options, storeDir, log });
  return { importer, logs };
}

export interface ImportOutcome {
  image?: ImportedImage;
  error?: ImportError;
  progress: ImportProgress[];
}

/** Runs one import to its end and collects what it reported. */
export async function importOnce(importer: Importer, job: { key: string; url: string; sha256?: string }): Promise<ImportOutcome> {
  const progress: ImportProgress[] = [];
  const { done } = importer.start(job, (p) => progress.push(p));
  try {
    return { image: await done, progress };
  } catch (err) {
    return { error: err as ImportError, progress };
  }
}

/** The store's directory entries, partial files included. */
export function storeEntries(storeDir: string): string[] {
  return fs.readdirSync(storeDir).sort();
}
