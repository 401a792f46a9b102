import { z } from 'zod';
import { parseDocument } from 'yaml';

/**
 * The cloud-init documents a machine or profile may carry (issue 21): what nbdmux checks before
 * it stores one, so a typo is a 400 naming the line, not a boot that silently ignores it.
 * cloud-init itself reads them at boot; nbdmux never interprets them beyond this.
 */

/** Each document, in UTF-8 bytes: a cloud-config is text, and the seed goes whole to every boot. */
export const maxCloudDocumentBytes = 64 * 1024;

/** cloud-init renders a user-data or vendor-data that starts with this line (22.4: `## template: jinja`). */
export const jinjaHeader = '## template: jinja';

/** Whether a document asks cloud-init to render it with jinja first. */
export function isJinja(text: string): boolean {
  return firstLine(text).trimEnd() === jinjaHeader;
}

function firstLine(text: string): string {
  const end = text.indexOf('\n');
  return end === -1 ? text : text.slice(0, end);
}

/**
 * Why `text` is not a YAML mapping (or empty), with its line; null when it is one. Jinja's `{{ }}`
 * must sit where YAML allows it (a plain or quoted scalar), as it does in a runcmd line.
 */
function yamlProblem(text: string): string | null {
  const doc = parseDocument(text, { uniqueKeys: true });
  const error = doc.errors[0];
  if (error !== undefined) {
    const where = error.linePos?.[0];
    const what = error.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    return `is not valid YAML${where === undefined ? '' : ` at line ${where.line}, column ${where.col}`}: ${what}`;
  }
  let contents: unknown;
  try {
    contents = doc.toJS();
  } catch (err) {
    // An alias expanding past yaml's bound (a "billion laughs"): cloud-init's loader would choke too.
    return `is not YAML cloud-init could load: ${(err as Error).message}`;
  }
  if (contents !== null && (typeof contents !== 'object' || Array.isArray(contents)))
    return 'must be a YAML mapping (key: value lines), as cloud-init reads it';
  return null;
}

function sizeProblem(text: string): string | null {
  const bytes = Buffer.byteLength(text, 'utf8');
  return bytes > maxCloudDocumentBytes ? `must be at most ${maxCloudDocumentBytes / 1024} KiB (got ${bytes} bytes)` : null;
}

/** Why a user-data or vendor-data is not a cloud-config cloud-init would apply; null when it is one. */
export function cloudConfigProblem(text: string): string | null {
  const size = sizeProblem(text);
  if (size !== null) return size;
  // The header is what makes cloud-init read it as a cloud-config: without it, it is ignored.
  const lines = text.split('\n');
  const header = (isJinja(text) ? lines[1] : lines[0])?.trimEnd();
  if (header !== '#cloud-config')
    return `must start with the line "#cloud-config" (after "${jinjaHeader}" when cloud-init is to render it), so cloud-init reads it as a cloud-config (line ${isJinja(text) ? 2 : 1})`;
  return yamlProblem(text);
}

/** Why a network-config is not one cloud-init could read; null when it is one. cloud-init never renders it with jinja. */
export function networkConfigProblem(text: string): string | null {
  const size = sizeProblem(text);
  if (size !== null) return size;
  if (isJinja(text)) return `cannot be a jinja template: cloud-init renders user-data and vendor-data only (line 1)`;
  return yamlProblem(text);
}

const text = z.string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') });

/** A user-data or vendor-data: a cloud-config, optionally a jinja template of one. */
export const cloudConfigText = text.superRefine((value, ctx) => {
  const problem = cloudConfigProblem(value);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

/** A network-config (version 1 or 2), as cloud-init's NoCloud reads it. */
export const networkConfigText = text.superRefine((value, ctx) => {
  const problem = networkConfigProblem(value);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});
