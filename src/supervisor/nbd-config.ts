import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AllowList } from '../rules/allow-list.js';
import {
  configSafePathPattern,
  exportNamePattern,
  isReservedExportName,
  stateNamePattern,
  versionedExportName,
  versionedExportNamePattern,
} from '../rules/names.js';
import { admittedVerdict, countedReply, endedLine } from './report-pipe.js';

/** nbd-server refuses to start with no export; this one is hidden from lists and refuses every client. */
export const placeholderSection = '__nbdmux_placeholder';

/** The file descriptor on which each serving process reports the export it negotiated. */
export const reportFd = 3;
/**
 * Each serving process inherits the daemon's open descriptor of every export it may serve, the
 * n-th export of its config at this number plus n, and opens the image as /proc/self/fd/N: the
 * very file judged at registration, whatever its path leads to now (see src/exports/pinned-files.ts).
 */
export const firstExportFd = reportFd + 1;

/**
 * How long a serving process stays after its connection when no daemon answers its postrun (the
 * daemon that started it is gone, so its pipe is): three refresh intervals of a daemon that
 * adopted it, which samples /proc each second, so that daemon still reads its final count.
 */
export const unansweredLingerSeconds = 3;

/**
 * Built by `npm run build` from native/socket-sent.c: run by the postrun, it prints what the
 * client's TCP acknowledged on the socket the postrun inherits. Left out of a path the config
 * could misread (then, as without a compiler, the daemon counts the process's wchar).
 */
export const socketSentPath = fileURLToPath(new URL('../../native/nbdmux-socket-sent', import.meta.url));

/**
 * Runs in the serving process once its connection is over, before it exits: it reports the bytes
 * the client received, and the daemon reads the process's final counts from /proc while the
 * postrun waits for its answer (a connection shorter than one sampling interval would otherwise
 * count nothing). It skips lines until that answer: the verdict on the prerun's report, which only
 * an export with an allow list reads, is still in the pipe. Like prerun, a printf format to
 * nbd-server: no '%'. Its exit status is ignored; a helper that fails prints nothing, and the
 * line is a bare `ended`.
 */
const postrun =
  `postrun = trap '' PIPE; echo ${endedLine}${configSafePathPattern.test(socketSentPath) ? ` $(${socketSentPath} 2>/dev/null)` : ''} >&${reportFd} && ` +
  `while read -r reply <&${reportFd}; do [ "$reply" = ${countedReply} ] && exit 0; done; sleep ${unansweredLingerSeconds}; exit 0`;

export interface ServedExport {
  id: number;
  /** The export's current version: the one this config serves, reported with the id. */
  versionId: number;
  name: string;
  /** The real path judged at registration: only named in a comment, what is served is `fd`. */
  file: string;
  /** The daemon's descriptor on the judged file, handed to every serving process that may serve it. */
  fd: number;
  readonly: boolean;
  /** Copy-on-write: clients write to a private diff file under the cow dir; absent means false. */
  cow?: boolean;
  /** Client ranges allowed to use it; when any, the daemon must admit each client before it is served. */
  allow?: readonly string[];
}

/**
 * A machine's persistent state (src/machines): served read-write, only to the address that
 * fetched the machine's script for this boot, and to one connection at a time.
 */
export interface ServedState {
  machineId: number;
  /** The machine's name, for refusals. */
  machine: string;
  /** `__state-<MAC in hex>`: a reserved name no export can take. */
  name: string;
  fd: number;
  /** The one client address that sees it in its config. */
  client: string;
  /** The export the machine boots: the state is served only to an address its allow list admits. */
  exportId: number;
}

/**
 * The version a machine's current boot was written for, served to that machine's address in
 * place of its export's current one: a reconnect after an outage reads the bytes its running
 * kernel booted from, whatever version the export has moved to since.
 */
export interface BootedVersion {
  exportId: number;
  versionId: number;
  /** That version's number: the machine's script names it `<export>@v<version>`. */
  version: number;
  /** The daemon's descriptor on that version's judged file; null when it cannot be served any more (the export is then hidden from the address). */
  fd: number | null;
  /** The machine's boot address: the one client whose config holds it. */
  client: string;
}

/** What the machines add to the configs of their own addresses. */
export interface MachineExports {
  states: readonly ServedState[];
  booted: readonly BootedVersion[];
}

/**
 * The exports a client may see and use: those with no allow list, and those whose list holds
 * its address. The others are left out of its config entirely, so it cannot list or probe them.
 */
export function exportsVisibleTo(
  exports: readonly ServedExport[],
  clientAddress: string,
  allowLists: ReadonlyMap<number, AllowList> = allowListsOf(exports),
): ServedExport[] {
  return exports.filter((exp) => !exp.allow?.length || allowLists.get(exp.id)!.allows(clientAddress));
}

/**
 * `exports` as `client` gets them: each export a machine booted from that address serves the
 * version the boot was written for, or is left out when that version can no longer be served.
 * Each such version is also there by its own name, `<export>@v<version>`, the name the machine's
 * script gives: machines sharing the address each read their own, whichever booted last.
 */
export function withBootedVersions(exports: readonly ServedExport[], booted: readonly BootedVersion[], client: string): ServedExport[] {
  const entries = booted.filter((entry) => entry.client === client);
  if (entries.length === 0) return [...exports];
  const mine = new Map(entries.map((entry) => [entry.exportId, entry]));
  const byId = new Map(exports.map((exp) => [exp.id, exp]));
  const current = exports.flatMap((exp) => {
    const entry = mine.get(exp.id);
    if (entry === undefined || entry.versionId === exp.versionId) return [exp];
    return entry.fd === null ? [] : [{ ...exp, versionId: entry.versionId, fd: entry.fd }];
  });
  const named = new Map<string, ServedExport>();
  for (const entry of entries) {
    const exp = byId.get(entry.exportId);
    if (exp === undefined) continue;
    const fd = entry.versionId === exp.versionId ? exp.fd : entry.fd;
    if (fd !== null)
      named.set(versionedExportName(exp.name, entry.version), {
        ...exp,
        name: versionedExportName(exp.name, entry.version),
        versionId: entry.versionId,
        fd,
      });
  }
  return [...current, ...named.values()];
}

/** Each export's allow list, parsed once per set rather than once per connection. */
export function allowListsOf(exports: readonly ServedExport[]): Map<number, AllowList> {
  return new Map(exports.filter((exp) => exp.allow?.length).map((exp) => [exp.id, new AllowList(exp.allow!)]));
}

/**
 * Renders a config nbd-server processes read at their start; each must inherit the exports'
 * descriptors in the same order from `firstExportFd` on. Pure: the same exports give the same
 * text. Throws on a name or path that could be misread, as a last line of defence behind input
 * validation.
 */
export function renderNbdServerConfig(exports: readonly ServedExport[], cowDir?: string, states: readonly ServedState[] = []): string {
  const lines = [
    '# Written by nbdmux; any edit is overwritten on the next change.',
    '[generic]',
    // Inetd mode: the client socket is stdin/stdout. Each instance still listens on a random
    // port of listenaddr that nothing ever accepts: keep it on loopback.
    'port = 0',
    'listenaddr = 127.0.0.1',
    'allowlist = true',
    // nbd-server 3.24 takes no lock around a copy-on-write page's first write, and appends it
    // with write() at the shared file offset: two such writes in flight at once swap pages, and
    // the client reads back the wrong bytes (fixed upstream in 2025, after 3.24). One thread
    // per serving process, wherever a cow export can be chosen.
    ...(exports.some((exp) => exp.cow) ? ['max_threads = 1'] : []),
    '',
    `[${placeholderSection}]`,
    'exportname = /nonexistent',
    'force_tls = true',
  ];
  for (const [index, exp] of exports.entries()) {
    // The registry's rules, checked again: nbd-server's config is a GKeyFile that silently misreads
    // a name or path outside them (see src/exports/rules.ts).
    if (!(exportNamePattern.test(exp.name) || versionedExportNamePattern.test(exp.name)) || isReservedExportName(exp.name)) {
      throw new Error(`refusing to write unsafe export name ${JSON.stringify(exp.name)}`);
    }
    if (!configSafePathPattern.test(exp.file)) {
      throw new Error(`refusing to write unsafe export path ${JSON.stringify(exp.file)}`);
    }
    if (!Number.isSafeInteger(exp.id) || exp.id < 1) throw new Error(`invalid export id ${exp.id}`);
    if (!Number.isSafeInteger(exp.versionId) || exp.versionId < 1) throw new Error(`invalid version id ${exp.versionId}`);
    if (exp.cow && (cowDir === undefined || !configSafePathPattern.test(cowDir))) {
      throw new Error(
        `refusing to write copy-on-write export ${exp.name} with cow dir ${JSON.stringify(cowDir)}: move the data dir to a path of A-Z a-z 0-9 . _ / + -`,
      );
    }
    lines.push(
      '',
      `# ${exp.file}, as judged at registration`,
      `[${exp.name}]`,
      `exportname = /proc/self/fd/${firstExportFd + index}`,
      // The client may write, but only to its own diff file (named <fd>-<ip>-<pid>.diff, removed
      // when the connection ends): the image stays untouched. Never sparse_cow: broken in 3.24.
      ...(exp.cow ? ['readonly = false', 'copyonwrite = true', `cowdir = ${cowDir}`] : [`readonly = ${exp.readonly ? 'true' : 'false'}`]),
      // Runs in the serving process after the client chose this export, before the file opens:
      // the ids name the export and the version this config serves exactly, even when two exports
      // share one file or a newer version became current since the process started. The string is a
      // printf format to nbd-server, so it must hold no '%'. A report nobody reads (the daemon is
      // restarting) must not refuse the client, hence the ignored SIGPIPE and `exit 0`.
      exp.allow && exp.allow.length > 0
        ? // Waits for the daemon's verdict on this client; no verdict (no daemon) refuses it.
          `prerun = trap '' PIPE; echo ${exp.id} ${exp.versionId} >&${reportFd}; read -r verdict <&${reportFd}; [ "$verdict" = ${admittedVerdict} ]`
        : `prerun = trap '' PIPE; echo ${exp.id} ${exp.versionId} >&${reportFd}; exit 0`,
      postrun,
    );
  }
  for (const [index, state] of states.entries()) {
    if (!stateNamePattern.test(state.name)) throw new Error(`refusing to write unsafe state export name ${JSON.stringify(state.name)}`);
    if (!Number.isSafeInteger(state.machineId) || state.machineId < 1) throw new Error(`invalid machine id ${state.machineId}`);
    lines.push(
      '',
      `# the persistent state of machine ${state.machineId}`,
      `[${state.name}]`,
      `exportname = /proc/self/fd/${firstExportFd + exports.length + index}`,
      'readonly = false',
      // The machine's filesystem journal relies on flushes and forced unit access reaching the file.
      'flush = true',
      'fua = true',
      // Always waits for the verdict: the daemon refuses a second attach of the same state.
      `prerun = trap '' PIPE; echo state ${state.machineId} >&${reportFd}; read -r verdict <&${reportFd}; [ "$verdict" = ${admittedVerdict} ]`,
      postrun,
    );
  }
  return lines.join('\n') + '\n';
}

/**
 * Replaces the file atomically: an nbd-server starting at any moment reads the old or the new
 * set, whole. No fsync: the database is the durable record and the file is rendered from it
 * again at every start, so syncing would only add ~10 ms to every change.
 */
export function writeFileAtomically(file: string, text: string): void {
  const temp = `${file}.${process.pid}.tmp`;
  try {
    const fd = fs.openSync(temp, 'w', 0o600);
    try {
      fs.writeSync(fd, text);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, file);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw err;
  }
}

/**
 * Makes `file` another name of `existing`, atomically, the way writeFileAtomically replaces a
 * file: a reader opens the old file or the new one, whole. No byte is copied, and the replaced
 * file's blocks are not freed here while another name still holds them (at 1000 exports,
 * rewriting a 280 KB copy and freeing the old one cost 1.5-2.6 ms of every change on ext4).
 * `existing` must never be written in place, or `file` changes with it.
 */
export function linkAtomically(existing: string, file: string): void {
  const temp = `${file}.${process.pid}.tmp`;
  try {
    // One left by a crashed run with the same pid would make link fail with EEXIST.
    fs.rmSync(temp, { force: true });
    fs.linkSync(existing, temp);
    fs.renameSync(temp, file);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw err;
  }
}
