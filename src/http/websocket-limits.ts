import type { Logger } from '../log.js';

/** RFC 6455 "Try Again Later": the server is overloaded, the client may reconnect later. */
export const tryAgainLater = 1013;
const warnEveryMs = 60_000;

export interface WebSocketLimits {
  total: number;
  perClient: number;
}

/**
 * Caps open WebSockets per client address and in total. Unlike idle HTTP connections they are
 * never evicted (each is a live subscription someone is watching), so past the cap a newcomer is
 * refused: accepted, then closed at once with 1013 and a reason, which a browser's WebSocket
 * shows (the status of a refused upgrade it hides).
 */
export class WebSocketCaps {
  private total = 0;
  private readonly perClient = new Map<string, number>();
  private lastWarning = -Infinity;

  constructor(
    private readonly limits: WebSocketLimits,
    private readonly log: Logger,
  ) {}

  /** Why `client` may not open another WebSocket now (a close reason, under 123 bytes), or null when it may: then it counts until `release`. */
  admit(client: string): string | null {
    const fromClient = this.perClient.get(client) ?? 0;
    const refusal =
      fromClient >= this.limits.perClient
        ? `too many WebSockets from ${client}: close some (--max-websockets-per-client ${this.limits.perClient})`
        : this.total >= this.limits.total
          ? `nbdmux has ${this.limits.total} WebSockets open, its limit: try again later (--max-websockets)`
          : null;
    if (refusal !== null) {
      this.warn(refusal, client);
      return refusal;
    }
    this.total++;
    this.perClient.set(client, fromClient + 1);
    return null;
  }

  release(client: string): void {
    this.total--;
    const left = this.perClient.get(client)! - 1;
    if (left === 0) this.perClient.delete(client);
    else this.perClient.set(client, left);
  }

  private warn(reason: string, client: string): void {
    if (Date.now() - this.lastWarning < warnEveryMs) return;
    this.lastWarning = Date.now();
    this.log.warn('refusing WebSockets (logged once a minute)', { reason, client });
  }
}
