/**
 * What an operator does about a refusal, said once as data by the domain module that refuses.
 * Each interface words it in its own terms: the REST and tRPC message names HTTP routes
 * (src/errors.ts), the CLI names its own commands (src/operator-cli/remedy.ts).
 */
export type Remedy =
  /** The MAC named no machine. */
  | { kind: 'list-machines' }
  /** The name named no export. */
  | { kind: 'list-exports' }
  /** The export is removed and its clients drain: only forcing cuts them. */
  | { kind: 'force-remove'; name: string }
  /** The export has no version that fits: its versions say which can serve. */
  | { kind: 'list-versions'; name: string }
  /** A machine with that MAC exists: change it rather than create it. */
  | { kind: 'edit-machine'; mac: string }
  /** The machine has no state: making it persistent gives it one. */
  | { kind: 'make-persistent'; mac: string }
  /** The machine boots nothing: give it an export. */
  | { kind: 'set-machine-export'; mac: string }
  /** The machine's export is gone or not serving: its record says which. */
  | { kind: 'show-machine'; mac: string }
  /** The name named no profile. */
  | { kind: 'list-profiles' }
  /** The profile still has machines: each leaves it (or goes) first. */
  | { kind: 'leave-profile'; name: string; macs: string[] };
