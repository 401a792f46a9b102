import { afterAll, describe, expect, it } from 'vitest';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { makeImage, sha256 } from '../testkit/nbd.js';
import { run } from '../testkit/process.js';

/**
 * Each nbd-server is handed the image descriptors its config names by position, and reads that
 * config a few milliseconds after it starts. Exports created and removed meanwhile (names that
 * sort before the one being read shift every position) must never make a client get another
 * export's file, or be refused.
 */
describe('clients of an untouched export while other exports come and go', () => {
  let daemon: RunningDaemon;
  afterAll(() => killEverything([daemon.dataDir]));

  it('reads exactly its image every time', async () => {
    daemon = await startDaemon();
    const images = tempDir('nbdmux-churn-');
    const steady = makeImage(images, 'steady.img', 256 * 1024);
    const other = makeImage(images, 'other.img', 256 * 1024);
    expect((await api(daemon, 'POST', '/exports', { name: 'steady', file: steady })).status).toBe(201);

    const until = Date.now() + 8_000;
    const churn = async (name: string) => {
      let changes = 0;
      while (Date.now() < until) {
        expect((await api(daemon, 'POST', '/exports', { name, file: other })).status).toBe(201);
        expect((await api(daemon, 'DELETE', `/exports/${name}`)).status).toBe(204);
        changes += 2;
      }
      return changes;
    };
    const expected = sha256(steady);
    const read = async () => {
      const outcomes: string[] = [];
      while (Date.now() < until) {
        const result = await run('nbdcopy', [daemon.nbdUri('steady'), '-']);
        outcomes.push(result.code !== 0 ? `failed: ${result.stderr.trim()}` : sha256(result.stdout) === expected ? 'exact' : 'other bytes');
      }
      return outcomes;
    };
    const [changes, ...readers] = await Promise.all([Promise.all(['a-1', 'a-2', 'a-3'].map(churn)), read(), read(), read()]);
    const outcomes = readers.flat();
    console.log(`${outcomes.length} reads while ${changes.reduce((a, b) => a + b, 0)} changes were made`);
    expect(outcomes.length).toBeGreaterThan(20);
    expect(outcomes.filter((outcome) => outcome !== 'exact')).toEqual([]);
  }, 60_000);
});
