import fs from 'node:fs';
import { UsageError } from './usage-error.js';

/** Far past the daemon's own bound (64 KiB, which it reports with the field): only a wrong file is refused here. */
const maxDocumentBytes = 1024 * 1024;

/** A cloud-init document given as a file; the daemon checks what it holds and says which line is wrong. */
function documentFrom(flag: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  try {
    if (fs.statSync(file).size > maxDocumentBytes) throw new UsageError(`--${flag} ${file} is over 1 MiB: it is not a cloud-init document`);
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`--${flag} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** `--user-data FILE`, `--network-config FILE`, `--vendor-data FILE`: a profile's or a machine's cloud-init documents. */
export const cloudInitFlags = {
  'user-data': { type: 'string', placeholder: 'FILE', read: (file: string | undefined) => documentFrom('user-data', file) },
  'network-config': { type: 'string', placeholder: 'FILE', read: (file: string | undefined) => documentFrom('network-config', file) },
  'vendor-data': { type: 'string', placeholder: 'FILE', read: (file: string | undefined) => documentFrom('vendor-data', file) },
} as const;

export const cloudInitFlagNames = Object.keys(cloudInitFlags) as (keyof typeof cloudInitFlags)[];

/** The documents given, as the API's fields. */
export function cloudInitChanges(given: { 'user-data'?: string; 'network-config'?: string; 'vendor-data'?: string }) {
  return {
    ...(given['user-data'] !== undefined && { userData: given['user-data'] }),
    ...(given['network-config'] !== undefined && { networkConfig: given['network-config'] }),
    ...(given['vendor-data'] !== undefined && { vendorData: given['vendor-data'] }),
  };
}
