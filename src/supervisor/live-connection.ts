/** One connection on the NBD port while it lives: what the table, the spawner, admission and the sampler share. */
export interface LiveConnection {
  readonly id: number;
  exportId: number | null;
  /** The version it attached; null before negotiation (or for a process from before versions). */
  versionId: number | null;
  /** The machine whose persistent state it serves (then exportId stays null). */
  machineId: number | null;
  readonly clientAddress: string;
  readonly clientPort: number;
  pid: number | null;
  pidStartTicks: number | null;
  readonly openedAt: string;
  negotiatedAt: string | null;
  bytesSent: number;
  /**
   * Bytes its prerun wrote on the report pipe: in its wchar once the prerun's shell is reaped, yet
   * never sent to the client. Zero for an adopted process, whose count this daemon takes from the
   * wchar it had at adoption, prerun included.
   */
  reportBytes: number;
  /** Read from /proc while the process waited in its postrun: exact, and its pid is no longer read. */
  bytesFinal: boolean;
  /** Send rate over the last refresh interval. */
  bytesPerSecond: number;
  sampledAt: number | null;
  /** Size of its copy-on-write diff file; null while it has none (not a cow export, not negotiated yet). */
  cowDiffBytes: number | null;
  /** Served by a process an earlier nbdmux started: not our child, so its end is seen in /proc. */
  readonly adopted: boolean;
  killRequested: boolean;
}
