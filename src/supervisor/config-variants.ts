import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AllowList } from '../rules/allow-list.js';
import {
  allowListsOf,
  exportsVisibleTo,
  linkAtomically,
  renderNbdServerConfig,
  withBootedVersions,
  writeFileAtomically,
  type BootedVersion,
  type MachineExports,
  type ServedExport,
  type ServedState,
} from './nbd-config.js';

/** What one serving process is started with: its config, and the descriptors that config names, in order. */
export interface ClientConfig {
  path: string;
  fds: readonly number[];
}

/** A config and whether it holds a machine's own state or booted versions (dropped when the machines change). */
type Variant = ClientConfig & { machineSpecific: boolean };

/**
 * A config variant no longer current is removed once no process can still be about to read it:
 * nbd-server reads its config first thing after exec, well within this.
 */
const staleAfterMs = 60_000;

/**
 * The nbd-server configs, one per set of exports some client may see (an export with an allow
 * list is visible only to the clients in it), each in a file named by its content,
 * `DATA_DIR/nbd-server.conf.<hash>`, written when first needed. A process is started with the
 * descriptors its config names by position (`/proc/self/fd/N`) and reads the file a few
 * milliseconds later: only a file that can never change under it keeps the two in step, whatever
 * changes meanwhile. `DATA_DIR/nbd-server.conf` holds the current full set for people to read
 * and for the self-test; no serving process reads it. It is a second name of the full set's
 * variant, so a change writes that text once.
 */
export class ConfigVariants {
  private exports: readonly ServedExport[] = [];
  private states: readonly ServedState[] = [];
  private booted: readonly BootedVersion[] = [];
  private allowLists = new Map<number, AllowList>();
  /** Configs of the current set, by the ids of the exports and versions they hold. */
  private current = new Map<string, Variant>();
  /** Every variant file known to exist, by path, with the last time a process was started with it. */
  private readonly lastUsed = new Map<string, number>();

  constructor(
    readonly fullPath: string,
    private readonly cowDir: string,
  ) {
    // Variants left by an earlier run may still be read by processes it just started.
    const dir = path.dirname(fullPath);
    const prefix = `${path.basename(fullPath)}.`;
    for (const name of fs.readdirSync(dir)) {
      if (name.startsWith(prefix) && !name.endsWith('.tmp')) this.lastUsed.set(path.join(dir, name), Date.now());
    }
  }

  /**
   * Makes `exports` the set; returns the full config text. Throws, changing nothing, on an export
   * the config cannot express. The full set's own file is written now, not at its first client:
   * with the data dir full, changes fail here, while clients that see every export (all of them,
   * when no export has an allow list) are still served.
   */
  apply(exports: readonly ServedExport[]): string {
    const text = renderNbdServerConfig(exports, this.cowDir);
    const full = this.write(exports, text);
    linkAtomically(full.path, this.fullPath);
    this.exports = exports;
    this.allowLists = allowListsOf(exports);
    this.current = new Map([[idsKey(exports, []), full]]);
    return text;
  }

  /**
   * Makes `states` the machines' state exports and `booted` the versions their boots were written
   * for; each is in the config of its machine's address only.
   */
  applyMachines({ states, booted }: MachineExports): void {
    this.states = states;
    this.booted = booted;
    const earlier = this.current;
    this.current = new Map([...earlier].filter(([, config]) => !config.machineSpecific));
    // Written now, while the machine fetches its script, not at its first connection: a data dir
    // that fills up in between must not keep it from attaching its state. A persistent machine's
    // every boot lands here: at 1000 exports, rendering again each of 100 machines' unchanged
    // configs took 0.5 s of CPU per boot, so a config whose inputs are unchanged is kept as it is.
    for (const client of new Set([...states, ...booted].map((entry) => entry.client))) {
      try {
        this.configFor(client, earlier);
      } catch {
        // Full already: its connection tries again, and is refused with the reason if it still cannot.
      }
    }
  }

  /** The state a live process of `machineId` serves, as the current set says; undefined once none does. */
  stateOf(machineId: number): ServedState | undefined {
    return this.states.find((state) => state.machineId === machineId);
  }

  /** The config for a new connection from `clientAddress`, written on first use. */
  forClient(clientAddress: string): ClientConfig {
    return this.configFor(clientAddress);
  }

  /** As forClient; a config of `earlier` with the same key holds the same text and descriptors, so it is taken over unrendered. */
  private configFor(clientAddress: string, earlier?: ReadonlyMap<string, Variant>): Variant {
    const shared = exportsVisibleTo(this.exports, clientAddress, this.allowLists);
    const visible = withBootedVersions(shared, this.booted, clientAddress);
    const states = this.states.filter((state) => state.client === clientAddress);
    const key = idsKey(visible, states);
    let config = this.current.get(key);
    if (config === undefined) {
      const machineSpecific = states.length > 0 || visible.length !== shared.length || visible.some((exp, index) => exp !== shared[index]);
      config = earlier?.get(key) ?? this.write(visible, renderNbdServerConfig(visible, this.cowDir, states), states, machineSpecific);
      this.current.set(key, config);
    }
    this.lastUsed.set(config.path, Date.now());
    return config;
  }

  /** The file holding `text`, named by it: an existing file of that name already holds exactly this text. */
  private write(exports: readonly ServedExport[], text: string, states: readonly ServedState[] = [], machineSpecific = false): Variant {
    const variantPath = `${this.fullPath}.${crypto.createHash('sha256').update(text).digest('hex').slice(0, 16)}`;
    // Known and still there: the name says it holds this text. One an operator removed is written again.
    if (!this.lastUsed.has(variantPath) || !fs.existsSync(variantPath)) writeFileAtomically(variantPath, text);
    this.lastUsed.set(variantPath, Date.now());
    return { path: variantPath, fds: [...exports.map((exp) => exp.fd), ...states.map((state) => state.fd)], machineSpecific };
  }

  /** Removes variants that are not current and were last started with long enough ago. */
  removeStale(now = Date.now()): void {
    const inUse = new Set([...this.current.values()].map((config) => config.path));
    for (const [variantPath, usedAt] of this.lastUsed) {
      if (inUse.has(variantPath) || now - usedAt < staleAfterMs) continue;
      fs.rmSync(variantPath, { force: true });
      this.lastUsed.delete(variantPath);
    }
  }
}

/**
 * Everything that makes a config's text and descriptors, besides the export set's own fields (each
 * export's file, modes and allow list are fixed until the next apply, which starts afresh): equal
 * keys, equal configs.
 */
function idsKey(exports: readonly ServedExport[], states: readonly ServedState[]): string {
  // By name too: a version a machine booted is there twice, under the export's name and its own.
  return [
    ...exports.map((exp) => `${exp.name}:${exp.id}:${exp.versionId}:${exp.fd}`),
    ...states.map((state) => `${state.name}:${state.machineId}:${state.fd}`),
  ].join(',');
}
