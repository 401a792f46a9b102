import { describe, expect, it } from 'vitest';
import type { NbdmuxEvent } from '../src/client.js';
import { attachLines } from '../src/attach-lines.js';
import { bootsOf, stagePath, timelineOf } from '../src/boot-timeline.js';

// What the dashboard's pages compute before they draw: pure, so table-tested here.
describe("the dashboard's pages, without a browser", () => {
  it('offers no nbdroot= line the initramfs could not use: it takes an IPv4 address', () => {
    const v4 = attachLines('lab', { httpBase: 'http://10.0.0.1:4040', nbdHost: '10.0.0.1', nbdPort: 10809 });
    expect(v4).toEqual([
      { text: 'nbd-client 10.0.0.1 10809 -N lab /dev/nbd0', what: 'nbd-client command' },
      { text: 'nbdroot=10.0.0.1:10809/lab', what: 'kernel command line for the ramboot kit' },
      { text: 'chain http://10.0.0.1:4040/boot/lab.ipxe', what: 'iPXE command that boots this export from nbdmux' },
    ]);
    const v6 = attachLines('lab', { httpBase: 'http://[::1]:4040', nbdHost: '::1', nbdPort: 10809 });
    expect(v6[1]).toEqual({ note: expect.stringMatching(/^nbdroot= takes the server's IPv4 address, and this page reached it as ::1/) });
    expect(JSON.stringify(v6)).not.toContain('::1:10809');
  });

  it('orders a timeline by time and tells each past boot from the next by its script', () => {
    expect(timelineOf({ timeline: { up: '2026-01-01T00:00:09Z', script: '2026-01-01T00:00:00Z', root: '2026-01-01T00:00:04Z' } })).toEqual([
      { stage: 'script', at: '2026-01-01T00:00:00Z' },
      { stage: 'root', at: '2026-01-01T00:00:04Z' },
      { stage: 'up', at: '2026-01-01T00:00:09Z' },
    ]);
    const stage = (id: number, mac: string, s: string, at: string, detail?: string) =>
      ({
        id,
        at,
        type: 'machine.stage',
        exportName: null,
        details: { mac, name: 'n', stage: s, client: '10.0.0.2', ...(detail && { detail }) },
      }) as NbdmuxEvent;
    // events.list is newest first.
    const events = [
      stage(6, 'aa', 'failed', '2026-01-01T00:01:30Z', 'no root device'),
      stage(5, 'bb', 'script', '2026-01-01T00:01:10Z'),
      stage(4, 'aa', 'script', '2026-01-01T00:01:00Z'),
      stage(3, 'aa', 'up', '2026-01-01T00:00:09Z'),
      stage(2, 'aa', 'root', '2026-01-01T00:00:04Z'),
      stage(1, 'aa', 'script', '2026-01-01T00:00:00Z'),
    ];
    const boots = bootsOf('aa', events);
    expect(boots.map((b) => [stagePath(b.steps), b.detail])).toEqual([
      ['script → failed (30s)', 'no root device'],
      ['script → root (4s) → up (5s)', null],
    ]);
  });
});
