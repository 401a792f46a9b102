import { isNbdmuxError } from '../../src/client.js';

/** The field messages of a refused request, or a single general message. */
export function errorMessages(error: unknown): { fields: Map<string, string>; general: string } {
  const fields = new Map<string, string>();
  if (isNbdmuxError(error)) {
    const issues = error.data?.issues ?? [];
    for (const issue of issues) if (!fields.has(issue.field)) fields.set(issue.field, issue.message);
    return { fields, general: issues.length > 0 ? '' : error.message };
  }
  return { fields, general: error instanceof Error ? error.message : String(error) };
}
