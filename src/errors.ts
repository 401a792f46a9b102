import { TRPCError } from '@trpc/server';
import { z } from 'zod';

/** Names the input field an error is about, so clients can point at it. */
class FieldCause extends Error {
  constructor(readonly field: string) {
    super(field);
  }
}

export interface FieldIssue {
  field: string;
  message: string;
}

export interface ErrorDescription {
  code: TRPCError['code'];
  message: string;
  issues?: FieldIssue[];
}

export function badInput(field: string, message: string): TRPCError {
  return new TRPCError({ code: 'BAD_REQUEST', message: `${field}: ${message}`, cause: new FieldCause(field) });
}

export function notFound(message: string): TRPCError {
  return new TRPCError({ code: 'NOT_FOUND', message });
}

export function conflict(message: string): TRPCError {
  return new TRPCError({ code: 'CONFLICT', message });
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
  if (cause instanceof FieldCause) {
    return { code, message: error.message, issues: [{ field: cause.field, message: error.message.slice(cause.field.length + 2) }] };
  }
  return { code, message: error.message };
}

function zodIssueToFieldIssues(issue: z.core.$ZodIssue): FieldIssue[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ field: [...issue.path, key].join('.'), message: 'unknown field; remove it' }));
  }
  return [{ field: issue.path.length > 0 ? issue.path.join('.') : '(body)', message: issue.message }];
}
