import type { NbdmuxClient } from '../client.js';
import { cleanText } from '../untrusted-text.js';
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

/**
 * Where commands print on a terminal or a pipe: every control character in what they print is
 * written out as text. Most of it comes from the daemon, and the daemon's rows hold what images,
 * machines and servers said, stored before their text was cleaned too. JSON's own escape is
 * used, so --json prints the same document. Only watch's screen and import's bar send terminal
 * sequences, of their own, straight to the terminal.
 */
export function terminalSafe(stream: Pick<NodeJS.WritableStream, 'write'>): Output {
  return { write: (text) => void stream.write(cleanText(text, { multiline: true })) };
}

/**
 * A reader that goes away (`nbdmux ls --json | head`) is done with the output, not a failure:
 * the command ends at once, quietly, with 0, as cat and ls do. Any other write error is one.
 */
export function endQuietlyWhenReaderLeaves(stream: NodeJS.WriteStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(0);
  });
}
