import type http from 'node:http';
import { TRPCError } from '@trpc/server';
import type { EventDetails } from '../model/event-map.js';
import type { BootableExports } from '../exports/bootable.js';
import { admits } from '../rules/allow-list.js';
import type { SummarisedEvents } from '../events/summarised-events.js';
import { bootEndpointOf } from './boot-endpoint.js';
import { readBody } from './body.js';
import { sendJsonError } from './reply.js';
import type { Logger } from '../log.js';
import type { AllowList } from '../rules/allow-list.js';
import { exportNamePattern, stateExportName } from '../rules/names.js';
import type { BootArtifacts } from '../boot/artifacts.js';
import { sendFile, sendText } from './boot-send.js';
import { normaliseMac } from '../rules/mac.js';
import { parseBusId } from '../inspect/nic-drivers.js';
import { maxReportBytes, reportedStages, type BootingMachine, type MachineBoots, type ReportedStage } from '../machines/boots.js';
import { cannotBootScript, exportScript, menuScript, type BootEndpoint } from '../boot/ipxe.js';
import { clientAddressOf } from '../rules/client-address.js';
import { cliRemedy } from '../operator-cli/remedy.js';
import type { MachineSeeds } from '../machines/seeds.js';
import { seedFiles, type SeedFile } from '../boot/seed.js';
import { sendSeed } from './seed-route.js';

export interface BootRoutesOptions {
  exports: BootableExports;
  artifacts: BootArtifacts;
  /** The boot routes' events, summarised: any client can send these requests as often as it likes. */
  events: Pick<SummarisedEvents, 'record'>;
  /** Known machines' boots: scripts by MAC, their stages, their reports. */
  machines: Pick<MachineBoots, 'scriptFetched' | 'lookup' | 'fileFetched' | 'report'>;
  /** Their cloud-init seeds, each for its boot's address alone. */
  seeds: Pick<MachineSeeds, 'forBoot'>;
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

type Target =
  | { kind: 'menu' }
  | { kind: 'report' }
  | { kind: 'seed'; rawMac: string; file: SeedFile }
  | { kind: 'script' | 'kernel' | 'initrd'; rawName: string };

function matchBootRoute(pathname: string): Target | null {
  if (pathname === '/boot.ipxe') return { kind: 'menu' };
  if (pathname === '/boot/report') return { kind: 'report' };
  const seed = /^\/boot\/seed\/([^/]+)\/([a-z-]+)$/.exec(pathname);
  if (seed && (seedFiles as readonly string[]).includes(seed[2]!)) return { kind: 'seed', rawMac: seed[1]!, file: seed[2] as SeedFile };
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
 * may not fetch its boot files, nor learn that it exists. Each request looks up the one export
 * it names, so its cost does not grow with the number of exports (the menu alone lists them).
 */
export function bootRoutes(options: BootRoutesOptions): BootRoutes {
  const { exports, artifacts, events, nbdAllow, log } = options;
  return async (req, res, url) => {
    const target = matchBootRoute(url.pathname);
    if (!target) return false;
    const method = req.method ?? 'GET';
    const allowed = target.kind === 'report' ? ['POST'] : ['GET', 'HEAD'];
    if (!allowed.includes(method)) {
      sendJsonError(res, url.pathname, 405, 'METHOD_NOT_SUPPORTED', `${method} is not supported here; use ${allowed.join(' or ')}`, {
        allow: allowed.join(', '),
      });
      return true;
    }
    const client = clientAddressOf(req.socket);
    if (!nbdAllow.allows(client)) {
      sendJsonError(
        res,
        url.pathname,
        403,
        'FORBIDDEN',
        `${client} may not use the NBD port (--nbd-allow), so it gets no boot files either`,
      );
      return true;
    }
    if (target.kind === 'report') {
      await report(req, res, url, client, options.machines);
      return true;
    }
    if (target.kind === 'seed') {
      sendSeed(req, res, url.pathname, client, target, options.seeds);
      return true;
    }
    // HEAD fetches nothing: only a GET is a machine booting.
    const booting = method === 'GET';
    const recordScript = (exportName: string | null, status: number, details: Pick<EventDetails['boot.script'], 'menu' | 'nbd'>) => {
      if (booting) events.record('boot.script', exportName, { client, status, ...details }, [status, details.menu]);
    };
    const endpoint = (): BootEndpoint => bootEndpointOf(req, options.nbdPublicPort);

    const macParam = target.kind === 'menu' ? url.searchParams.get('mac') : null;
    if (macParam !== null) {
      const mac = normaliseMac(macParam);
      if (mac === null) {
        sendJsonError(
          res,
          url.pathname,
          400,
          'BAD_REQUEST',
          `mac: "${macParam.slice(0, 40)}" is not a MAC address; chain /boot.ipxe?mac=\${net0/mac} from iPXE`,
        );
        return true;
      }
      const machine = options.machines.lookup(mac);
      const at = endpoint();
      const script = machine === undefined ? undefined : machineScript(machine, client, exports, artifacts, at);
      if (script !== undefined) {
        // The machine's own script, booting or saying why it cannot: this address is its boot now.
        if (booting) options.machines.scriptFetched(mac, client);
        recordScript(script.exportName, sendText(req, res, script.text), script.boots ? { nbd: `${at.nbdHost}:${at.nbdPort}` } : {});
        return true;
      }
      // An unknown MAC is remembered; a known one whose export refuses this address is answered
      // exactly as an unknown one, and nothing of it changes.
      if (machine === undefined && booting) options.machines.scriptFetched(mac, client);
    }
    if (target.kind === 'menu') {
      const entries = exports.all(client).flatMap((exp) => {
        const info = artifacts.bootInfo(exp);
        return info.ready ? [{ name: exp.name, description: info.os }] : [];
      });
      const script = menuScript(entries, {
        httpBase: endpoint().httpBase,
        defaultName: options.bootDefault,
        timeoutMs: options.menuTimeoutMs,
      });
      recordScript(null, sendText(req, res, script), { menu: entries.map((entry) => entry.name).join(',') });
      return true;
    }

    const name = decodeName(target.rawName);
    const exp = name === null ? undefined : exports.find({ name });
    if (exp === undefined || !admits(exp, client)) {
      // The same answer for a name that does not exist and one this machine may not use, as on the NBD port.
      sendJsonError(
        res,
        url.pathname,
        403,
        'FORBIDDEN',
        `no export "${target.rawName.slice(0, 80)}" that ${client} may boot: check the name in GET /exports and the export's allow list`,
      );
      return true;
    }
    if (target.kind === 'script') {
      const info = artifacts.bootInfo(exp);
      if (!info.ready) {
        sendJsonError(res, url.pathname, 503, 'SERVICE_UNAVAILABLE', `export "${exp.name}" cannot boot: ${info.reason ?? 'not ready'}`);
        return true;
      }
      const at = endpoint();
      recordScript(
        exp.name,
        sendText(req, res, exportScript({ ...exp, partition: info.partition, lv: info.lv, subvol: info.subvol }, at)),
        {
          nbd: `${at.nbdHost}:${at.nbdPort}`,
        },
      );
      return true;
    }
    const busId = url.searchParams.get('busid') ?? '';
    const parsedBusId = busId === '' ? null : parseBusId(busId);
    if (parsedBusId?.ok === false && !parsedBusId.wellFormed) {
      sendJsonError(
        res,
        url.pathname,
        400,
        'BAD_REQUEST',
        `${parsedBusId.reason}; the script nbdmux serves passes it as ?busid=\${netX/busid}`,
      );
      return true;
    }
    // A NIC off PCI (or none named) is booted by the rule for any NIC: the image's kernel must have every kit NIC driver.
    const nic = parsedBusId?.ok ? parsedBusId.nic : null;
    const file = await (target.kind === 'kernel' ? artifacts.kernelFor(exp, nic) : artifacts.initrdFor(exp, nic));
    if (!file.ok) {
      sendJsonError(
        res,
        url.pathname,
        file.status,
        file.status === 404 ? 'NOT_FOUND' : 'SERVICE_UNAVAILABLE',
        `export "${exp.name}" cannot boot: ${file.reason}`,
      );
      return true;
    }
    const kind = target.kind;
    // A machine's script names it (?mac=): the stage lands on that machine even when others boot
    // from the same address. A malformed one is no machine's, as a script without one.
    const fetchedBy = normaliseMac(url.searchParams.get('mac') ?? '') ?? undefined;
    await sendFile(req, res, file, url.pathname, log, (status) => {
      if (!booting) return;
      events.record(kind === 'kernel' ? 'boot.kernel' : 'boot.initrd', exp.name, { client, status, bytes: file.size }, [status]);
      options.machines.fileFetched(client, exp.name, kind, fetchedBy, file.detail);
    });
    return true;
  };
}

/**
 * A known machine's script: its export's with its identity (`boots`), or why it cannot boot.
 * Undefined when its export's allow list leaves out `client`: that address learns nothing of it,
 * and changes nothing of it.
 */
function machineScript(
  machine: BootingMachine,
  client: string,
  exports: BootableExports,
  artifacts: BootArtifacts,
  endpoint: BootEndpoint,
): { text: string; exportName: string | null; boots: boolean } | undefined {
  const cannot = (exportName: string | null, reason: string) => ({
    text: cannotBootScript(machine.name, reason),
    exportName,
    boots: false,
  });
  // Read at the machine's console, by an operator who answers with the CLI.
  const { effective } = machine;
  if (effective.exportId === null)
    return cannot(null, `no export is set for it: ${cliRemedy({ kind: 'set-machine-export', mac: machine.mac }, false)}`);
  const exp = exports.find({ id: effective.exportId });
  if (exp === undefined)
    return cannot(null, `its export is removed, or not serving: ${cliRemedy({ kind: 'show-machine', mac: machine.mac }, false)}`);
  if (!admits(exp, client)) return undefined;
  const info = artifacts.bootInfo(exp);
  if (!info.ready) return cannot(exp.name, `export ${exp.name} cannot boot: ${info.reason ?? 'not ready'}`);
  const identity = {
    name: machine.name,
    mac: machine.mac,
    machineId: machine.machineId,
    cmdline: effective.cmdline,
    stateExport: effective.persistent ? stateExportName(machine.mac) : null,
  };
  return {
    text: exportScript({ ...exp, partition: info.partition, lv: info.lv, subvol: info.subvol }, endpoint, identity),
    exportName: exp.name,
    boots: true,
  };
}

/** `POST /boot/report?mac=MAC&stage=STAGE`, a text body: a machine's initramfs or booted system says where its boot is. */
async function report(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
  client: string,
  machines: BootRoutesOptions['machines'],
): Promise<void> {
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
    if (err instanceof TRPCError && err.code === 'PAYLOAD_TOO_LARGE')
      sendJsonError(res, url.pathname, 413, 'PAYLOAD_TOO_LARGE', `a report is at most ${maxReportBytes} bytes`, { connection: 'close' });
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
