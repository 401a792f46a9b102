/** Failures to start a process or accept a client that say the daemon or the machine ran short, not that nbd-server is broken. */
const shortages: Record<string, string> = {
  EMFILE: 'nbdmux has no file descriptor left (EMFILE): raise its open-file limit (ulimit -n, systemd LimitNOFILE=)',
  ENFILE: 'the system has no file descriptor left (ENFILE): raise fs.file-max or find what holds them',
  EAGAIN: 'the system refused a new process (EAGAIN): too many processes for this user, or memory is short',
  ENOMEM: 'the system is out of memory (ENOMEM)',
};

/** What a shortage of file descriptors, processes or memory means to the operator; null for any other error. */
export function describeShortage(err: NodeJS.ErrnoException): string | null {
  return (err.code !== undefined && shortages[err.code]) || null;
}
