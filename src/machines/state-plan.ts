import { conflict } from '../errors.js';
import type { Effective } from '../profiles/fields.js';

/** What a change of a machine's effective fields does to its state file. */
export interface StatePlan {
  discard: boolean;
  grow: boolean;
  /** A new empty state (after a discard, or for a machine that had none). */
  create: boolean;
  size: number;
}

/**
 * The state a machine keeps across a change of its effective fields, whoever made it (itself or
 * its profile): an upper layer belongs to the lower layer it was written over, so a new export
 * discards it unless `keepState`; ext4 grows offline but never shrinks safely.
 */
export function planState(
  name: string,
  before: Pick<Effective, 'exportId' | 'persistent' | 'stateSize'>,
  after: Pick<Effective, 'exportId' | 'persistent' | 'stateSize'>,
  stateExists: boolean,
  keepState: boolean,
): StatePlan {
  const hasState = before.persistent && stateExists;
  const exportChanged = after.exportId !== before.exportId;
  const discard = hasState && (!after.persistent || (exportChanged && !keepState));
  const grow = hasState && !discard && after.stateSize > before.stateSize;
  if (hasState && !discard && after.stateSize < before.stateSize) {
    throw conflict(
      `stateSize: the state filesystem of ${name} cannot shrink from ${before.stateSize} to ${after.stateSize} bytes; reset the machine (discarding its state) or keep the size`,
    );
  }
  return { discard, grow, create: after.persistent && (discard || !hasState), size: after.stateSize };
}
