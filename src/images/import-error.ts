/** Why an import failed, for clients to tell cases apart without parsing the message. */
export type ImportFailure =
  | 'bad-url'
  | 'outside-roots'
  | 'not-found'
  | 'dns'
  | 'refused'
  | 'connect-timeout'
  | 'tls'
  | 'http-status'
  | 'redirects'
  | 'truncated'
  | 'stalled'
  | 'too-slow'
  | 'network'
  | 'sha256-mismatch'
  | 'bad-image'
  | 'backing-file'
  | 'no-space'
  | 'tool-failed'
  | 'tool-timeout'
  | 'io'
  | 'cancelled';

/** An import that failed: `message` tells the operator what happened and what to do. */
export class ImportError extends Error {
  constructor(
    readonly reason: ImportFailure,
    message: string,
    options?: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'ImportError';
  }
}

export function cancelled(): ImportError {
  return new ImportError('cancelled', 'the import was cancelled');
}

/** Errors from the file system's side: out of space, said as such; anything else passes through. */
export function isOutOfSpaceCode(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
