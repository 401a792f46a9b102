import type { Actor } from '../model/event-map.js';
import type { Session } from './tokens.js';

export type Identity = { via: 'open' } | { via: 'bearer' } | { via: 'cookie'; session: Session };

/** Why a request may not use the control plane, with the HTTP status that says so. */
export interface Refusal {
  ok: false;
  status: 401 | 403 | 429;
  message: string;
  retryAfterSeconds?: number;
}

/** Who is calling, as every procedure sees it: an identity and the address it came from; or why it may not call. */
export type Caller = { ok: true; identity: Identity; client: string } | Refusal;

/** Who made a change, as its events record it. */
export function actorOf({ identity, client }: Extract<Caller, { ok: true }>): Actor {
  return { actor: identity.via === 'cookie' ? sessionActor(identity.session) : identity.via, client };
}

/** How events name the session that acted: enough of its id to tell sessions apart, too little to matter if read. */
export function sessionActor(session: Session): `session:${string}` {
  return `session:${session.id.slice(0, 8)}`;
}

const refusalCodes = { 401: 'UNAUTHORIZED', 403: 'FORBIDDEN', 429: 'TOO_MANY_REQUESTS' } as const;

/** The error code of a refusal, over tRPC and REST alike. */
export function refusalCode(refusal: Refusal): (typeof refusalCodes)[Refusal['status']] {
  return refusalCodes[refusal.status];
}

/** The headers a refusal carries: the scheme to authenticate with, or when to try again. */
export function refusalHeaders(refusal: Refusal): Record<string, string> {
  if (refusal.status === 401) return { 'www-authenticate': 'Bearer realm="nbdmux"' };
  if (refusal.status === 429) return { 'retry-after': String(refusal.retryAfterSeconds) };
  return {};
}
