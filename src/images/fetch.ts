import { constants, fstatSync, readlinkSync } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { fileURLToPath } from 'node:url';
import { isUnderAnyRoot } from '../rules/image-roots.js';
import { formatBytes } from '../units.js';
import { cancelled, ImportError } from './import-error.js';
import { SourceRate, type MinRate } from './min-rate.js';

export interface FetchOptions {
  imageRoots: readonly string[];
  signal: AbortSignal;
  connectTimeoutMs: number;
  /** No byte for this long (headers or body) fails the download as stalled. */
  stallTimeoutMs: number;
  /** A server slower than this, over the time the import waits on it, fails the download. */
  minRate: MinRate;
}

export interface Download {
  /** Content-Length (or the file's size); null when the server did not say. */
  totalBytes: number | null;
  body: AsyncIterable<Buffer>;
}

/** Redirects followed at most; one more fails. */
const maxRedirects = 5;

/** Opens `url` (http, https, or a file under the image roots) for reading. */
export async function openDownload(url: string, options: FetchOptions): Promise<Download> {
  const parsed = parseUrl(url);
  if (parsed.protocol === 'file:') return openFile(parsed, options.imageRoots);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ImportError('bad-url', `${url}: only http://, https:// and file:// URLs can be imported`);
  }
  const seen = new Set<string>();
  for (let current = parsed; ;) {
    seen.add(current.href);
    const { response, rate, failure } = await request(current, options);
    const location =
      response.statusCode !== undefined && response.statusCode >= 300 && response.statusCode < 400 ? response.headers.location : undefined;
    if (location === undefined) return body(current, response, rate, failure);
    response.resume();
    const next = parseUrl(location, current);
    if (next.protocol !== 'http:' && next.protocol !== 'https:')
      throw new ImportError('redirects', `${current.href} redirected to ${next.href}: only http and https redirects are followed`);
    if (current.protocol === 'https:' && next.protocol === 'http:')
      throw new ImportError(
        'redirects',
        `${current.href} redirected from https to plain http (${next.href}): give the final https URL instead`,
      );
    if (seen.has(next.href))
      throw new ImportError('redirects', `${url}: a redirect loop (${next.href} again): fix the server or give the image's final URL`);
    if (seen.size > maxRedirects)
      throw new ImportError(
        'redirects',
        `${url}: more than ${maxRedirects} redirects (the last to ${next.href}): give the image's final URL`,
      );
    current = next;
  }
}

function parseUrl(url: string, base?: URL): URL {
  try {
    return new URL(url, base);
  } catch {
    throw new ImportError('bad-url', `${url} is not a URL`);
  }
}

interface Response {
  response: http.IncomingMessage;
  /** Told when the body is asked for and arrives; the request fails once it is too slow. */
  rate: SourceRate;
  /** Why the request was ended on purpose (cancel, stall), if it was: the body then sees only a reset. */
  failure: () => ImportError | null;
}

/** One GET, resolved with the response head; every network failure becomes an ImportError saying which. */
function request(url: URL, { signal, connectTimeoutMs, stallTimeoutMs, minRate }: FetchOptions): Promise<Response> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(cancelled());
    const get = url.protocol === 'https:' ? https.get : http.get;
    // agent false: a fresh connection each time, so the connect timer below measures this one.
    const req = get(url, { agent: false, headers: { 'user-agent': 'nbdmux', 'accept-encoding': 'identity' } });
    let failure: ImportError | null = null;
    const fail = (err: ImportError) => {
      failure ??= err;
      req.destroy(err);
    };
    const onAbort = () => fail(cancelled());
    signal.addEventListener('abort', onAbort, { once: true });
    const connectTimer = setTimeout(
      () => fail(new ImportError('connect-timeout', `${url.host} did not accept a connection within ${connectTimeoutMs / 1000} s`)),
      connectTimeoutMs,
    );
    req.on('socket', (socket) => socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer)));
    req.setTimeout(stallTimeoutMs, () => fail(stalled(url, stallTimeoutMs)));
    // A byte now and then resets the stall timer for ever: only a rate bounds how long a source holds a slot.
    const rate = new SourceRate(minRate);
    const rateTimer = setInterval(
      () => {
        const slow = rate.tooSlow();
        if (slow !== null) fail(tooSlow(url, slow.bytes, minRate));
      },
      Math.min(1000, minRate.windowMs / 10),
    );
    req.on('close', () => {
      clearTimeout(connectTimer);
      clearInterval(rateTimer);
      signal.removeEventListener('abort', onAbort);
    });
    req.on('error', (err) => reject(describeNetworkError(url, err)));
    req.on('response', (response) => {
      clearTimeout(connectTimer);
      resolve({ response, rate, failure: () => failure });
    });
  });
}

function body(url: URL, response: http.IncomingMessage, rate: SourceRate, failure: () => ImportError | null): Download {
  if (response.statusCode !== 200) {
    response.resume();
    throw new ImportError('http-status', `GET ${url.href} answered ${response.statusCode} ${response.statusMessage ?? ''}`.trim());
  }
  const header = response.headers['content-length'];
  const totalBytes = header !== undefined && /^\d+$/.test(header) ? Number(header) : null;
  async function* chunks(): AsyncGenerator<Buffer> {
    let received = 0;
    try {
      for await (const chunk of response as AsyncIterable<Buffer>) {
        rate.received(chunk.length);
        received += chunk.length;
        yield chunk;
        rate.waiting();
      }
    } catch (err) {
      throw failure() ?? (err instanceof ImportError ? err : truncated(url, received, totalBytes));
    } finally {
      response.destroy();
    }
    if (totalBytes !== null && received < totalBytes) throw truncated(url, received, totalBytes);
  }
  return { totalBytes, body: chunks() };
}

async function openFile(url: URL, imageRoots: readonly string[]): Promise<Download> {
  let file: string;
  try {
    file = fileURLToPath(url);
  } catch (err) {
    throw new ImportError('bad-url', `${url.href}: ${(err as Error).message}`);
  }
  const realPath = await fs.realpath(file).catch(() => {
    throw new ImportError('not-found', `${file}: no such file`);
  });
  if (imageRoots.length > 0 && !(await isUnderAnyRoot(realPath, imageRoots))) {
    throw new ImportError(
      'outside-roots',
      `${realPath} is outside the image roots (${imageRoots.join(', ')}): move the image under one of them`,
    );
  }
  const fd = await fs
    .open(realPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    .catch((err: NodeJS.ErrnoException) => {
      throw new ImportError('not-found', `${file} cannot be opened for reading: ${err.code ?? err.message}`);
    });
  // A directory on the way swapped for a symlink since realpath() shows here.
  const stats = fstatSync(fd.fd);
  if (readlinkSync(`/proc/self/fd/${fd.fd}`) !== realPath || !stats.isFile()) {
    await fd.close();
    throw new ImportError('not-found', `${file} is not a regular file (or changed while nbdmux opened it)`);
  }
  return { totalBytes: stats.size, body: fd.createReadStream({ highWaterMark: 1 << 20 }) };
}

function stalled(url: URL, stallTimeoutMs: number): ImportError {
  return new ImportError(
    'stalled',
    `${url.host} sent nothing for ${stallTimeoutMs / 1000} s: the server stalled; try again later or another mirror`,
  );
}

function tooSlow(url: URL, bytes: number, { bytes: floor, windowMs }: MinRate): ImportError {
  const seconds = windowMs / 1000;
  return new ImportError(
    'too-slow',
    `${url.host} sent ${formatBytes(bytes)} in the last ${seconds} s the import waited on it, below the minimum ${formatBytes(floor)} per ${seconds} s (--import-min-rate): check the URL and the link (or lower --import-min-rate for a slow link)`,
  );
}

function truncated(url: URL, received: number, totalBytes: number | null): ImportError {
  const expected = totalBytes === null ? '' : ` of the ${totalBytes} announced`;
  return new ImportError(
    'truncated',
    `${url.href}: the connection ended after ${received} bytes${expected}: the download is incomplete; try again`,
  );
}

const tlsCodes = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH)/;

function describeNetworkError(url: URL, err: Error): ImportError {
  if (err instanceof ImportError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME')
    return new ImportError('dns', `${url.hostname}: no such host (DNS lookup failed: ${code}); check the URL`);
  if (code === 'ECONNREFUSED')
    return new ImportError('refused', `${url.host} refused the connection: is the server running, is the port right?`);
  if (tlsCodes.test(code) || /SSL|TLS|certificate/i.test(err.message))
    return new ImportError(
      'tls',
      `${url.host}: TLS failed (${code || err.message}): the server's certificate is not trusted here or the handshake failed`,
    );
  return new ImportError('network', `${url.href}: ${err.message}${code ? ` (${code})` : ''}`);
}
