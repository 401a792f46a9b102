import { badInput } from '../errors.js';

// How a REST route reads the names its path gives.

/** The body's fields with the one the path gives (an export's name, a machine's MAC). */
export function withPathField(body: unknown, field: string, value: string, what: string): never {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badInput('(body)', 'must be a JSON object');
  if (field in body) throw badInput(field, `the ${what} is named by the path; remove "${field}" from the body`);
  return { ...body, [field]: value } as never;
}

export function decodeName(raw: string): string {
  return decodePathPart('name', raw);
}

export function decodePathPart(field: string, raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw badInput(field, `the ${field} in the path is not valid percent-encoding`);
  }
}
