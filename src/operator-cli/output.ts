import type { NbdmuxClient } from '../client.js';
import type { Invocation } from './args.js';

/** Where a command prints: the terminal, or a test's buffer. */
export interface Output {
  write(text: string): void;
}

/** Each command prints either for people or, with --json, one JSON document for scripts, and returns its exit code. */
export type Command = (client: NbdmuxClient, invocation: Invocation, out: Output) => Promise<number>;

/** What --json prints: one JSON document. */
export function printJson(out: Output, value: unknown): void {
  out.write(`${JSON.stringify(value, null, 2)}\n`);
}
