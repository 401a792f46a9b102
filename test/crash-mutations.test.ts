import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { placeholderSection } from '../src/supervisor/nbd-config.js';
import { api, killEverything, startDaemon, tempDir, type RunningDaemon } from '../testkit/daemon.js';
import { listExports, makeImage, readExport, sha256 } from '../testkit/nbd.js';

const mutationsPerRound = 100;
/** The daemon is SIGKILLed once this many of a round's mutations have been answered: early, midway, late. */
const killAfterAnswers = [1, 40, 85];

interface Acknowledged {
  created: string[];
  deleted: string[];
}

/** Served exports and whether each has the pinned file identity every export is registered with. */
function servedRows(dataDir: string): Array<{ name: string; file_identity: string | null }> {
  const db = new Database(path.join(dataDir, 'state.db'), { readonly: true });
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    // The pin belongs to the image: the export's current version holds it.
    return db
      .prepare(
        'SELECT e.name, v.file_identity FROM exports e LEFT JOIN export_versions v ON v.id = e.current_version_id WHERE e.removed_at IS NULL ORDER BY e.name',
      )
      .all() as Array<{ name: string; file_identity: string | null }>;
  } finally {
    db.close();
  }
}

/** The export sections of the rendered config every new connection's nbd-server reads. */
function configSections(dataDir: string): string[] {
  const config = fs.readFileSync(path.join(dataDir, 'nbd-server.conf'), 'utf8');
  return [...config.matchAll(/^\[([^\]\n]+)\]$/gm)]
    .map((match) => match[1]!)
    .filter((name) => name !== 'generic' && name !== placeholderSection)
    .sort();
}

/**
 * Sends every mutation at once (creates of new names, deletes of names served now) and SIGKILLs
 * the daemon once `killAfter` have been answered; resolves with what was acknowledged before.
 */
async function mutateUntilKilled(
  daemon: RunningDaemon,
  creates: string[],
  deletes: string[],
  image: string,
  killAfter: number,
): Promise<Acknowledged> {
  const acknowledged: Acknowledged = { created: [], deleted: [] };
  let answered = 0;
  let killed: Promise<number | null> | undefined;
  const answer = () => {
    if (++answered >= killAfter) killed ??= daemon.stop('SIGKILL');
  };
  const create = (name: string) =>
    api(daemon, 'POST', '/exports', { name, file: image }).then(
      ({ status }) => {
        if (killed === undefined && status === 201) acknowledged.created.push(name);
        answer();
      },
      () => {},
    );
  const remove = (name: string) =>
    api(daemon, 'DELETE', `/exports/${name}`).then(
      ({ status }) => {
        if (killed === undefined && status === 204) acknowledged.deleted.push(name);
        answer();
      },
      () => {},
    );
  await Promise.all([...creates.map(create), ...deletes.map(remove)]);
  await (killed ?? daemon.stop('SIGKILL'));
  return acknowledged;
}

describe('SIGKILL in the middle of 100 parallel mutations', () => {
  const dataDir = tempDir('nbdmux-crash-');
  afterAll(() => killEverything([dataDir]));

  it('leaves the database, the rendered config, GET /exports and the NBD listing in agreement, with nothing half-made', async () => {
    const image = makeImage(tempDir('nbdmux-images-'), 'crash.img', 256 * 1024);
    // 100 requests at once from one address: more than the default --max-http-per-client.
    const options = { dataDir, args: ['--max-http-per-client', '128'] };
    let daemon = await startDaemon(options);
    for (const [round, killAfter] of killAfterAnswers.entries()) {
      const served = servedRows(dataDir).map((row) => row.name);
      const deletes = served.slice(0, Math.min(served.length, mutationsPerRound / 2));
      const creates = Array.from({ length: mutationsPerRound - deletes.length }, (_, i) => `round${round}-${i}`);
      const acknowledged = await mutateUntilKilled(daemon, creates, deletes, image, killAfter);
      console.log(
        `round ${round}: killed after ${killAfter} answers; ${acknowledged.created.length} creates and ${acknowledged.deleted.length} deletes acknowledged before`,
      );

      daemon = await startDaemon(options);
      const rows = servedRows(dataDir);
      const names = rows.map((row) => row.name);
      expect(
        rows.filter((row) => row.file_identity === null),
        'a row without its pinned file',
      ).toEqual([]);
      expect(configSections(dataDir)).toEqual(names);
      const listed = (await api(daemon, 'GET', '/exports')).json as Array<{ name: string; state: string }>;
      expect(
        listed
          .filter((exp) => exp.state === 'serving')
          .map((exp) => exp.name)
          .sort(),
      ).toEqual(names);
      expect((await listExports(daemon.nbdUri())).sort()).toEqual(names);
      // What was acknowledged before the kill is durable; what was not is either whole or absent.
      for (const name of acknowledged.created) expect(names).toContain(name);
      for (const name of acknowledged.deleted) expect(names).not.toContain(name);
      expect(names.length).toBeGreaterThan(0);
      expect(sha256(await readExport(daemon.nbdUri(names.at(-1))))).toBe(sha256(image));
    }
    expect(await daemon.stop()).toBe(0);
  }, 120_000);
});
