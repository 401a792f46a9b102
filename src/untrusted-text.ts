/**
 * Text nbdmux did not write (what an image holds, what a machine reports, what a server answers)
 * ends up in an operator's terminal and in the dashboard. There, a control character is a
 * command: ESC ] 0; retitles the terminal, ESC [ or the one-byte CSI 0x9b moves the cursor and
 * repaints what was printed before, a bidi override shows a name backwards. Imported by the
 * daemon, the CLI and the page alike: nothing Node-only here.
 */

/** C0 but the newline, DEL, C1 (the 0x9b CSI among them), Arabic letter mark, LRM/RLM, the line and paragraph separators, the bidi embeddings, overrides and isolates. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const unsafeButNewline = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex -- as above
const unsafe = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/**
 * `text` with every character a terminal or a bidi-aware view would act on written out as a
 * visible `\uXXXX` (ESC reads `\u001b`): the operator still sees what the source held, and can
 * find the file or line it came from. Newlines stay only in a field that is `multiline` (a
 * machine's report); everywhere else a newline would forge a line of its own. The escape is
 * JSON's own, so applied to JSON text it leaves the same document.
 */
export function cleanText(text: string, { multiline = false }: { multiline?: boolean } = {}): string {
  return text.replace(multiline ? unsafeButNewline : unsafe, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
