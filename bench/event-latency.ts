import { createNbdmuxClient } from '../src/client.js';
import { alternate, ratio, row, seconds, type BenchOptions, type BenchResult } from './lib/measure.js';
import { startNbdmux } from './lib/servers.js';
import { api } from '../testkit/daemon.js';
import { makeImage } from '../testkit/nbd.js';

const goalMs = 50;

/**
 * How long an event takes to reach a WebSocket subscriber (events.stream), against the HTTP
 * round trip of the request that causes it, both in the same run: each sample creates an
 * export, timed either to its export.created event at the subscriber or to the POST's answer.
 */
export async function eventLatency({ smoke, workDir }: BenchOptions): Promise<BenchResult> {
  const image = makeImage(workDir, 'events.img', 1 << 20);
  const daemon = await startNbdmux(workDir, 'nbdmux', true);
  /** Per export name: called with when its event arrived (monotonic) and how long after it was recorded (wall clock). */
  const waiting = new Map<string, (receivedAt: bigint, deliveryMs: number) => void>();
  const subscription = createNbdmuxClient({ url: daemon.url }).events.stream.subscribe(
    {},
    {
      onData: ({ data }) => {
        if (data.type === 'export.created' && data.exportName)
          waiting.get(data.exportName)?.(process.hrtime.bigint(), Date.now() - Date.parse(data.at));
      },
    },
  );
  try {
    await new Promise((resolve) => setTimeout(resolve, 300)); // the subscription is live
    const recordToReceipt: number[] = [];
    let n = 0;
    const create = async (variant: 'event' | 'answer') => {
      const name = `${variant}-${n++}`;
      const received = new Promise<{ at: bigint; deliveryMs: number }>((resolve) =>
        waiting.set(name, (at, deliveryMs) => resolve({ at, deliveryMs })),
      );
      const start = process.hrtime.bigint();
      const response = await api(daemon, 'POST', '/exports', { name, file: image });
      const answered = seconds(start) * 1000;
      if (response.status !== 201) throw new Error(`POST /exports answered ${response.status}`);
      const event = await received;
      waiting.delete(name);
      recordToReceipt.push(event.deliveryMs);
      return variant === 'event' ? Number(event.at - start) / 1e6 : answered;
    };
    const samples = await alternate(smoke ? 2 : 100, ['event', 'answer'] as const, create);
    const eventRow = row('POST sent to its event at a WebSocket subscriber', samples.event, 'ms');
    const answerRow = row('POST sent to its HTTP answer (baseline)', samples.answer, 'ms');
    const deliveryRow = row('event recorded to received (server clock, ms resolution)', recordToReceipt, 'ms');
    return {
      name: 'event to subscriber over the WebSocket',
      rows: [eventRow, answerRow, deliveryRow],
      ratios: [ratio('event at subscriber / HTTP answer', eventRow, answerRow)],
      notes: [
        `goal: median event latency <= ${goalMs} ms: ${eventRow.median <= goalMs ? 'met' : 'MISSED'} (${eventRow.median.toFixed(1)} ms)`,
      ],
    };
  } finally {
    subscription.unsubscribe();
    await daemon.stop();
  }
}
