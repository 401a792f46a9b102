import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import net from 'node:net';
import { pipeline } from 'node:stream/promises';
import { TRPCError } from '@trpc/server';
import type { EventLog } from '../events/event-log.js';
import type { EventDetails } from '../events/event-map.js';
import type { ExportRegistry, ExportView } from '../exports/registry.js';
import { hostOfHeader } from '../http/allowed-hosts.js';
import { readBody } from '../http/body.js';
import { sendJsonError } from '../http-reply.js';
import type { Logger } from '../log.js';
import { AllowList } from '../exports/allow-list.js';
import { exportNamePattern } from '../exports/rules.js';
import type { BootArtifacts, BootFile } from './artifacts.js';
import { normaliseMac } from '../machines/inputs.js';
import { maxReportBytes, reportedStages, type MachineBoots, type ReportedStage } from '../machines/boots.js';
import { stateExportName } from '../machines/registry.js';
import type { MachineRow } from '../db/schema.js';
import { cannotBootScript, exportScript, httpBase, menuScript, type BootEndpoint } from './ipxe.js';

export interface BootRoutesOptions {
  registry: Pick<ExportRegistry, 'list'>;
  artifacts: BootArtifacts;
  events: Pick<EventLog, 'record'>;
  /** Known machines' boots: scripts by MAC, their stages, their reports. */
  machines: Pick<MachineBoots, 'scriptFetched' | 'lookup' | 'fileFetched' | 'report'>;
  /** `--nbd-allow`: a machine the NBD port would refuse gets no boot files either. */
  nbdAllow: AllowList;
  /** The NBD port machines dial (`--nbd-public-port`, else the port nbdmux listens on). */
  nbdPublicPort: number;
  /** `--boot-default`: the menu boots it after `menuTimeoutMs` when it is ready. */
  bootDefault: string | null;
  menuTimeoutMs: number;
  log: Logger;
}

/** Answers a boot route and returns true, or returns false for any other path. */
export type BootRoutes = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<boolean>;

type Target = { kind: 'menu' } | { kind: 'report' } | { kind: 'script' | 'kernel' | 'initrd'; rawName: string };

function matchBootRoute(pathname: string): Target | null {
  if (pathname === '/boot.ipxe') return { kind: 'menu' };
  if (pathname === '/boot/report') return { kind: 'report' };
  const script = /^\/boot\/([^/]+)\.ipxe$/.exec(pathname);
  if (script) return { kind: 'script', rawName: script[1]! };
  const file = /^\/boot\/([^/]+)\/(vmlinuz|initrd\.img)$/.exec(pathname);
  if (file) return { kind: file[2] === 'vmlinuz' ? 'kernel' : 'initrd', rawName: file[1]! };
  return null;
}

/**
 * What a machine needs to boot an export, on the HTTP port: iPXE scripts, the kernel and the
 * initramfs. Machines cannot log in, so these answer without authentication, but only to
 * addresses the NBD port would serve that export to: a machine that may not attach an export
 * may not fetch its boot files, nor learn that it exists.
 */
export function bootRoutes(options: BootRoutesOptions): BootRoutes {
  const { registry, artifacts, events, nbdAllow, log } = options;
  return async (req, res, url) => {
    const target = matchBootRoute(url.pathname);
    if (!target) return false;
    const method = req.method ?? 'GET';
    const allowed = target.kind === 'report' ? ['POST'] : ['GET', 'HEAD'];
    if (!allowed.includes(method)) {
      sendJsonError(res, url.pathname, 405, 'METHOD_NOT_SUPPORTED', `${method} is not supported here; use ${allowed.join(' or ')}`, { allow: allowed.join(', ') });
      return true;
    }
    const client = req.socket.remoteAddress ?? '';
    if (!nbdAllow.allows(client)) {
      sendJsonError(res, url.pathname, 403, 'FORBIDDEN', `${client} may not use the NBD port (--nbd-allow), so it gets no boot files either`);
      return true;
    }
    if (target.kind === 'report') {
      await report(req, res, url, client, options.machines);
      return true;
    }
    const bootable = registry.list().filter((exp) => exp.state === 'serving' && new AllowList(exp.allow).allows(client));
    // HEAD fetches nothing: only a GET is a machine booting.
    const recordScript = (exportName: string | null, status: number, details: Pick<EventDetails['boot.script'], 'menu' | 'nbd'>) => {
      if (method === 'GET') events.record('boot.script', exportName, { client, status, ...details });
    };
    const recordFile = (type: 'boot.kernel' | 'boot.initrd', exportName: string, status: number, bytes: number) => {
      if (method === 'GET') events.record(type, exportName, { client, status, bytes });
    };

    const macParam = target.kind === 'menu' ? url.searchParams.get('mac') : null;
    if (macParam !== null) {
      const mac = normaliseMac(macParam);
      if (mac === null) {
        sendJsonError(res, url.pathname, 400, 'BAD_REQUEST', `mac: "${macParam.slice(0, 40)}" is not a MAC address; chain /boot.ipxe?mac=\${net0/mac} from iPXE`);
        return true;
      }
      // HEAD fetches nothing: only a GET is a machine booting.
      const machine = method === 'GET' ? options.machines.scriptFetched(mac, client) : options.machines.lookup(mac);
      if (machine !== undefined) {
        const script = machineScript(machine, bootable, artifacts, { httpBase: requestBase(req), nbdHost: nbdHostFor(req), nbdPort: options.nbdPublicPort });
        recordScript(script.exportName, sendText(req, res, script.text), script.exportName === null ? {} : { nbd: `${nbdHostFor(req)}:${options.nbdPublicPort}` });
        return true;
      }
    }
    if (target.kind === 'menu') {
      const entries = bootable.flatMap((exp) => {
        const info = artifacts.bootInfo(exp);
        return info.ready ? [{ name: exp.name, description: info.os }] : [];
      });
      const script = menuScript(entries, { httpBase: requestBase(req), defaultName: options.bootDefault, timeoutMs: options.menuTimeoutMs });
      recordScript(null, sendText(req, res, script), { menu: entries.map((entry) => entry.name).join(',') });
      return true;
    }

    const name = decodeName(target.rawName);
    const exp = bootable.find((candidate) => candidate.name === name);
    if (name === null || exp === undefined) {
      // The same answer for a name that does not exist and one this machine may not use, as on the NBD port.
      sendJsonError(res, url.pathname, 403, 'FORBIDDEN', `no export "${target.rawName}" that ${client} may boot: check the name in GET /exports and the export's allow list`);
      return true;
    }
    if (target.kind === 'script') {
      const info = artifacts.bootInfo(exp);
      if (!info.ready) {
        sendJsonError(res, url.pathname, 503, 'SERVICE_UNAVAILABLE', `export "${exp.name}" cannot boot: ${info.reason ?? 'not ready'}`);
        return true;
      }
      const endpoint: BootEndpoint = { httpBase: requestBase(req), nbdHost: nbdHostFor(req), nbdPort: options.nbdPublicPort };
      recordScript(exp.name, sendText(req, res, exportScript({ ...exp, partition: info.partition }, endpoint)), { nbd: `${endpoint.nbdHost}:${endpoint.nbdPort}` });
      return true;
    }
    const file = await (target.kind === 'kernel' ? artifacts.kernelFor(exp) : artifacts.initrdFor(exp));
    if (!file.ok) {
      sendJsonError(res, url.pathname, file.status, file.status === 404 ? 'NOT_FOUND' : 'SERVICE_UNAVAILABLE', `export "${exp.name}" cannot boot: ${file.reason}`);
      return true;
    }
    const kind = target.kind;
    await sendFile(req, res, file, url.pathname, log, (status) => {
      recordFile(kind === 'kernel' ? 'boot.kernel' : 'boot.initrd', exp.name, status, file.size);
      if (method === 'GET') options.machines.fileFetched(client, exp.name, kind);
    });
    return true;
  };
}

/** A known machine's script: its export's, with its identity; or why it cannot boot. */
function machineScript(machine: MachineRow, bootable: readonly ExportView[], artifacts: BootArtifacts, endpoint: BootEndpoint): { text: string; exportName: string | null } {
  if (machine.exportId === null) {
    return { text: cannotBootScript(machine.name, `no export is set for it: PATCH /machines/${machine.mac} with an export`), exportName: null };
  }
  const exp = bootable.find((candidate) => candidate.id === machine.exportId);
  if (exp === undefined) {
    return { text: cannotBootScript(machine.name, `its export is removed, or not serving, or its allow list leaves out this address: see GET /machines/${machine.mac}`), exportName: null };
  }
  const info = artifacts.bootInfo(exp);
  if (!info.ready) return { text: cannotBootScript(machine.name, `export ${exp.name} cannot boot: ${info.reason ?? 'not ready'}`), exportName: exp.name };
  const identity = { name: machine.name, mac: machine.mac, machineId: machine.machineId, cmdline: machine.cmdline, stateExport: machine.persistent ? stateExportName(machine.mac) : null };
  return { text: exportScript({ ...exp, partition: info.partition }, endpoint, identity), exportName: exp.name };
}

/** `POST /boot/report?mac=MAC&stage=STAGE`, a text body: a machine's initramfs or booted system says where its boot is. */
async function report(req: http.IncomingMessage, res: http.ServerResponse, url: URL, client: string, machines: BootRoutesOptions['machines']): Promise<void> {
  const mac = normaliseMac(url.searchParams.get('mac') ?? '');
  const stage = url.searchParams.get('stage') ?? '';
  if (mac === null || !(reportedStages as readonly string[]).includes(stage)) {
    sendJsonError(res, url.pathname, 400, 'BAD_REQUEST', `want ?mac=MAC&stage=${reportedStages.join('|')}`);
    return;
  }
  if (Number(req.headers['content-length'] ?? 0) > maxReportBytes) {
    sendJsonError(res, url.pathname, 413, 'PAYLOAD_TOO_LARGE', `a report is at most ${maxReportBytes} bytes`, { connection: 'close' });
    req.resume();
    return;
  }
  let body: Buffer;
  try {
    body = await readBody(req);
  } catch (err) {
    // Too large (sent without a length), or cut off: the machine's report is lost, nothing else.
    if (err instanceof TRPCError && err.code === 'PAYLOAD_TOO_LARGE') sendJsonError(res, url.pathname, 413, 'PAYLOAD_TOO_LARGE', `a report is at most ${maxReportBytes} bytes`, { connection: 'close' });
    else res.destroy();
    return;
  }
  const outcome = machines.report(mac, client, stage as ReportedStage, body.toString('latin1'));
  if (outcome.ok) res.writeHead(204, { 'cache-control': 'no-store' }).end();
  else sendJsonError(res, url.pathname, outcome.status, outcome.status === 403 ? 'FORBIDDEN' : 'CONFLICT', outcome.message);
}

function decodeName(raw: string): string | null {
  try {
    const name = decodeURIComponent(raw);
    return exportNamePattern.test(name) ? name : null;
  } catch {
    return null;
  }
}

/** `http://host[:port]` as the machine reached us; the request screen has already judged the Host header. */
function requestBase(req: http.IncomingMessage): string {
  const header = req.headers.host!;
  const port = /:(\d{1,5})$/.exec(header)?.[1];
  return httpBase(hostOfHeader(header)!, port === undefined ? null : Number(port));
}

/**
 * The NBD address for the initramfs, which takes an IPv4 address and resolves no names: the Host
 * header's when it is one (it survives port forwards and qemu's guestfwd), else the address the
 * request arrived on, which is the one the machine reached over the network.
 */
function nbdHostFor(req: http.IncomingMessage): string {
  const host = hostOfHeader(req.headers.host!)!;
  if (net.isIPv4(host)) return host;
  const local = (req.socket.localAddress ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  return net.isIPv4(local) ? local : host;
}

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
function sendText(req: http.IncomingMessage, res: http.ServerResponse, text: string): number {
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
async function sendFile(req: http.IncomingMessage, res: http.ServerResponse, file: Extract<BootFile, { ok: true }>, pathname: string, log: Logger, served: (status: number) => void): Promise<void> {
  const headers = { etag: file.etag, 'cache-control': 'no-cache' };
  if (clientHas(req, file.etag)) {
    res.writeHead(304, headers).end();
    return served(304);
  }
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file.path, 'r');
  } catch (err) {
    sendJsonError(res, pathname, 503, 'SERVICE_UNAVAILABLE', `${pathname} cannot be read just now (${(err as NodeJS.ErrnoException).code ?? String(err)}); try again`, { 'retry-after': '1' });
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
    if ((err as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') log.warn('boot file not sent whole', { path: pathname, error: (err as Error).stack ?? String(err) });
    res.destroy();
  } finally {
    await handle.close();
  }
}
