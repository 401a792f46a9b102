import { describe, expect, it } from 'vitest';
import { DataDirSpace } from '../src/db/data-dir-space.js';
import { EventLog } from '../src/events/event-log.js';
import { createLogger } from '../src/log.js';
import { StartFailures } from '../src/supervisor/start-failures.js';
import { memoryDatabase } from './helpers/db.js';

/** Start failures recording into a real event log in memory; the data dir is never asked about (nothing fills up). */
function startFailures() {
  const events = new EventLog(memoryDatabase(), new DataDirSpace('/nonexistent', createLogger('error')));
  return { failures: new StartFailures(events, createLogger('error')), events: () => events.recent(100).reverse() };
}

const failure = (connection: number, reason = 'nbd-server exited before serving (exit 1): Error: broken') => ({
  connection,
  client: '10.0.0.9',
  reason,
});

describe('start failures', () => {
  it('stay failing when a start failed after the recovery check began', () => {
    const { failures, events } = startFailures();
    failures.failed(failure(1));
    const seen = failures.failing!.failedStarts;
    failures.failed(failure(2));
    failures.recovered(seen);
    expect(failures.failing).toMatchObject({ failedStarts: 2 });
    expect(events().map((event) => event.type)).toEqual(['nbd-server.failed']);
    failures.recovered();
    expect(failures.failing).toBeNull();
    expect(events().map((event) => [event.type, event.details])).toEqual([
      ['nbd-server.failed', { connection: 1, client: '10.0.0.9', reason: failure(1).reason, count: 1 }],
      ['nbd-server.failed', { reason: failure(1).reason, count: 1, since: expect.any(String) }],
      ['nbd-server.recovered', { failingSince: expect.any(String), failedStarts: 2, lastReason: failure(1).reason }],
    ]);
  });

  it('count failures for more than 16 reasons at once together, so varied reasons cannot flood the history either', () => {
    const { failures, events } = startFailures();
    for (let i = 0; i < 100; i++) failures.failed(failure(i, `reason ${i}`));
    failures.flush();
    const recorded = events();
    expect(recorded).toHaveLength(17);
    expect(recorded.at(-1)!.details).toEqual({
      reason: 'nbd-server failed for more than 16 reasons at once, counted together; the first of them: reason 16',
      count: 84,
      since: expect.any(String),
    });
    expect(recorded.reduce((sum, event) => sum + ((event.details as { count?: number }).count ?? 0), 0)).toBe(100);
  });
});
