import { describe, expect, it } from 'vitest';
import { otherClients, RefusalSummary, type Refusal, type RefusalRecord } from '../src/events/refusal-summary.js';

const notAllowed = (client: string, port = 40000): Refusal => ({
  client,
  port,
  reason: `${client} is not in --nbd-allow`,
  exportName: null,
});
const t0 = Date.parse('2026-11-30T08:00:00.000Z');

/** A summary on a clock the test moves by hand; `at(ms, ...)` refuses at t0 + ms, `sweepAt(ms)` sweeps then. */
function summary(options: { intervalMs?: number; maxKinds?: number } = {}) {
  const records: RefusalRecord[] = [];
  let now = t0;
  const s = new RefusalSummary({ intervalMs: 10_000, ...options, now: () => now, record: (r) => records.push(r) });
  return {
    records,
    at(ms: number, ...refusals: Refusal[]) {
      now = t0 + ms;
      for (const refusal of refusals) s.refuse(refusal);
    },
    sweepAt(ms: number) {
      now = t0 + ms;
      s.sweep();
    },
    flush: () => s.flush(),
  };
}

const totalCount = (records: RefusalRecord[]) => records.reduce((sum, r) => sum + r.details.count, 0);

describe('refusal summary', () => {
  it('records the first refusal at once, with its port', () => {
    const s = summary();
    s.at(0, notAllowed('10.0.0.9', 51000));
    expect(s.records).toEqual([
      { exportName: null, details: { client: '10.0.0.9', port: 51000, reason: '10.0.0.9 is not in --nbd-allow', count: 1 } },
    ]);
  });

  it('counts repeats in the interval and records them once when it ends', () => {
    const s = summary();
    s.at(0, ...Array.from({ length: 500 }, () => notAllowed('10.0.0.9')));
    s.sweepAt(9_999);
    expect(s.records).toHaveLength(1);
    s.sweepAt(10_000);
    expect(s.records).toHaveLength(2);
    expect(s.records[1]).toEqual({
      exportName: null,
      details: { client: '10.0.0.9', reason: '10.0.0.9 is not in --nbd-allow', count: 499, since: '2026-11-30T08:00:00.000Z' },
    });
  });

  it('records nothing at the end of an interval that saw a single refusal', () => {
    const s = summary();
    s.at(0, notAllowed('10.0.0.9'));
    s.sweepAt(60_000);
    expect(s.records).toHaveLength(1);
  });

  it('makes the first refusal after an interval news again', () => {
    const s = summary();
    s.at(0, notAllowed('10.0.0.9'), notAllowed('10.0.0.9'));
    s.sweepAt(10_000);
    s.at(12_000, notAllowed('10.0.0.9', 52000));
    expect(s.records.map((r) => r.details.count)).toEqual([1, 1, 1]);
    expect(s.records[2]!.details.port).toBe(52000);
  });

  it('keeps addresses, exports and reasons apart', () => {
    const s = summary();
    const byExport = (exportName: string): Refusal => ({
      client: '10.0.0.9',
      port: 1,
      reason: `10.0.0.9 is not in the allow list of export ${exportName}`,
      exportName,
    });
    s.at(0, notAllowed('10.0.0.9'), notAllowed('10.0.0.8'), byExport('alpha'), byExport('beta'), {
      ...notAllowed('10.0.0.9'),
      reason: 'the connection limit (4) is reached',
    });
    expect(s.records).toHaveLength(5);
    expect(s.records.map((r) => r.exportName)).toEqual([null, null, 'alpha', 'beta', null]);
  });

  it('counts every kind beyond the bound under one entry, recorded at its end', () => {
    const s = summary({ maxKinds: 3 });
    s.at(0, ...Array.from({ length: 1000 }, (_, i) => notAllowed(`10.0.${i >> 8}.${i & 255}`)));
    expect(s.records).toHaveLength(3);
    s.sweepAt(10_000);
    expect(s.records).toHaveLength(4);
    expect(s.records[3]!.details).toMatchObject({ client: otherClients, count: 997 });
    expect(totalCount(s.records)).toBe(1000);
  });

  it('records every open count at flush, so a shutdown loses none', () => {
    const s = summary();
    s.at(0, notAllowed('10.0.0.9'), notAllowed('10.0.0.9'), notAllowed('10.0.0.9'));
    s.at(5_000, notAllowed('10.0.0.8'));
    s.flush();
    expect(totalCount(s.records)).toBe(4);
    expect(s.records).toHaveLength(3);
  });

  it('adds up to the number of refusals, whatever the timing', () => {
    const s = summary({ maxKinds: 4 });
    let refused = 0;
    for (let ms = 0; ms < 60_000; ms += 700) {
      s.at(ms, notAllowed(`10.0.0.${ms % 9}`));
      refused++;
      if (ms % 2100 === 0) s.sweepAt(ms);
    }
    s.flush();
    expect(totalCount(s.records)).toBe(refused);
  });
});
