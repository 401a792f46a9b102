/**
 * Failed password attempts per source address: after `limit` within `windowMs`, further attempts
 * are refused until the oldest failure leaves the window. Memory stays bounded by forgetting
 * addresses whose failures have all expired.
 */
export class FailureThrottle {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly limit = 5,
    private readonly windowMs = 60_000,
  ) {}

  /** Milliseconds until this address may try again; 0 when it may try now. */
  retryAfterMs(address: string, now = Date.now()): number {
    const recent = this.recent(address, now);
    return recent.length < this.limit ? 0 : recent[0]! + this.windowMs - now;
  }

  fail(address: string, now = Date.now()): void {
    this.failures.set(address, [...this.recent(address, now), now]);
  }

  private recent(address: string, now: number): number[] {
    const recent = (this.failures.get(address) ?? []).filter((at) => at > now - this.windowMs);
    if (recent.length === 0) this.failures.delete(address);
    return recent;
  }
}
