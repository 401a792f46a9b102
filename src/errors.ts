import { TRPCError } from '@trpc/server';
import { z } from 'zod';
import type { Remedy } from './remedy.js';

/**
 * What a refusal is about beyond its code: the input field at fault, so clients can point at it,
 * and what the operator does next, which each interface words in its own terms.
 */
class RefusalCause extends Error {
  constructor(
    readonly field: string | undefined,
    readonly remedy: Remedy | undefined,
  ) {
    super(field ?? remedy?.kind ?? 'refusal');
  }
}

export interface FieldIssue {
  field: string;
  message: string;
}

export interface ErrorDescription {
  code: TRPCError['code'];
  /** The problem and, when there is one, its remedy in REST terms. */
  message: string;
  issues?: FieldIssue[];
  /** With a remedy: the message without it, for a client that words the remedy itself. */
  problem?: string;
  remedy?: Remedy;
}

export function badInput(field: string, message: string, remedy?: Remedy): TRPCError {
  return new TRPCError({ code: 'BAD_REQUEST', message: `${field}: ${message}`, cause: new RefusalCause(field, remedy) });
}

export function notFound(message: string, remedy?: Remedy): TRPCError {
  return new TRPCError({ code: 'NOT_FOUND', message, ...(remedy && { cause: new RefusalCause(undefined, remedy) }) });
}

export function conflict(message: string, remedy?: Remedy): TRPCError {
  return new TRPCError({ code: 'CONFLICT', message, ...(remedy && { cause: new RefusalCause(undefined, remedy) }) });
}

/** The change needs something of this host that failed (a tool, the disk): the message says what. */
export function unavailable(message: string): TRPCError {
  return new TRPCError({ code: 'SERVICE_UNAVAILABLE', message });
}

export function dataDirFull(dataDir: string): TRPCError {
  return new TRPCError({
    code: 'SERVICE_UNAVAILABLE',
    message: `the data dir ${dataDir} is full, so nothing was changed: free space there, then try again`,
  });
}

/**
 * The one way an error is shown to a client, over tRPC and REST alike: a precise code, a message
 * that says what to do, the fields at fault. An internal error never shows its message.
 */
export function describeError(error: TRPCError): ErrorDescription {
  const { code, cause } = error;
  if (code === 'INTERNAL_SERVER_ERROR') {
    return { code, message: 'internal error: nothing was changed; the daemon log has the details' };
  }
  if (cause instanceof z.ZodError) {
    const issues = cause.issues.flatMap(zodIssueToFieldIssues);
    return { code, message: issues.map((i) => `${i.field}: ${i.message}`).join('; '), issues };
  }
  if (cause instanceof RefusalCause) {
    const { field, remedy } = cause;
    const withRemedy = (text: string) => (remedy ? `${text}; ${restRemedy(remedy)}` : text);
    return {
      code,
      message: withRemedy(error.message),
      ...(field !== undefined && { issues: [{ field, message: withRemedy(error.message.slice(field.length + 2)) }] }),
      ...(remedy && { problem: error.message, remedy }),
    };
  }
  return { code, message: error.message };
}

/** Every remedy as the REST routes do it, for curl users and the tRPC message alike. */
function restRemedy(remedy: Remedy): string {
  switch (remedy.kind) {
    case 'list-machines':
      return 'GET /machines lists them, and unknown MACs that asked to boot are under GET /machines/discovered';
    case 'list-exports':
      return 'GET /exports lists them';
    case 'force-remove':
      return `DELETE /exports/${remedy.name}?force=true cuts them`;
    case 'list-versions':
      return `see GET /exports/${remedy.name}/versions`;
    case 'edit-machine':
      return `change it with PATCH /machines/${remedy.mac}`;
    case 'make-persistent':
      return `PATCH /machines/${remedy.mac} with "persistent": true gives it one`;
    case 'set-machine-export':
      return `PATCH /machines/${remedy.mac} with an "export"`;
    case 'show-machine':
      return `see GET /machines/${remedy.mac}`;
    case 'list-profiles':
      return 'GET /profiles lists them';
    case 'leave-profile':
      return `PATCH /machines/{mac} with "profile": null takes each out of it (${remedy.macs.join(', ')})`;
  }
}

function zodIssueToFieldIssues(issue: z.core.$ZodIssue): FieldIssue[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ field: [...issue.path, key].join('.'), message: 'unknown field; remove it' }));
  }
  return [{ field: issue.path.length > 0 ? issue.path.join('.') : '(body)', message: issue.message }];
}
