import { spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { renderNbdServerConfig, reportFd, unansweredLingerSeconds, type ServedExport } from '../src/supervisor/nbd-config.js';
import {
  answerReports,
  maxPipeBytes,
  parseEnded,
  parseReport,
  verdictLine,
  type AnsweredReport,
  type Report,
} from '../src/supervisor/report-pipe.js';

describe('the report pipe protocol', () => {
  it.each<[text: string, report: Report | null]>([
    ['7 9', { exportId: 7, versionId: 9 }],
    ['state 4', { machineId: 4 }],
    // What the prerun of a process started before versions writes: it still counts for its export.
    ['7', { exportId: 7, versionId: null }],
    // Only the exact form our prerun writes: anything else did not come from it.
    [' 12 15 ', null],
    ['3 5\n4 6', null],
    ['', null],
    ['abc', null],
    ['7 x', null],
    ['7  9', null],
    ['state 4 5', null],
    ['9007199254740993 1', null],
    ['1 9007199254740993', null],
    ['1'.repeat(17), null],
  ])('reads the line %j as %j', (text, report) => {
    expect(parseReport(text)).toEqual(report);
  });

  it.each<[text: string, bytes: number | null | undefined]>([
    ['ended', null],
    ['ended 0', 0],
    ['ended 75497472', 75497472],
    ['ended 9007199254740991', 9007199254740991],
    // Only the exact form our postrun writes: anything else is no ended line, and no count.
    ['ended ', undefined],
    ['ended -1', undefined],
    ['ended 1e9', undefined],
    ['ended 12 13', undefined],
    ['ended 0x10', undefined],
    [' ended 5', undefined],
    ['ended 9007199254740993', undefined],
    [`ended ${'9'.repeat(17)}`, undefined],
    ['ended\t5', undefined],
  ])('reads the ended line %j as %j', (text, bytes) => {
    expect(parseEnded(text)).toBe(bytes);
  });

  it('answers with one line per verdict', () => {
    expect([verdictLine(true), verdictLine(false)]).toEqual(['allow\n', 'deny\n']);
  });
});

/** The prerun the renderer writes for an export with an allow list: it reports, then waits for the verdict. */
const listed: ServedExport = {
  id: 42,
  versionId: 142,
  name: 'listed',
  file: '/srv/images/l.img',
  fd: 20,
  readonly: true,
  allow: ['127.0.0.2'],
};
const prerun = /^prerun = (.*)$/m.exec(renderNbdServerConfig([listed]))![1]!;
const postrun = /^postrun = (.*)$/m.exec(renderNbdServerConfig([listed]))![1]!;

interface Answered {
  code: number | null;
  judged: number[];
  answered: AnsweredReport[];
  ended: Array<number | null>;
  rejected: Array<[text: string, closed: boolean]>;
}

/**
 * Runs `command` the way nbd-server runs a prerun or postrun (system(), so /bin/sh -c) with a real
 * pipe at the report descriptor, answered by answerReports as the spawner does.
 */
function answer(command: string, judge: (exportId: number) => boolean = () => true): Promise<Answered> {
  return new Promise((resolve, reject) => {
    const stdio: Array<'ignore' | 'pipe'> = Array.from({ length: reportFd + 1 }, (_, fd) => (fd === reportFd ? 'pipe' : 'ignore'));
    const child = spawn('/bin/sh', ['-c', command], { stdio, timeout: 10_000 });
    const result: Answered = { code: null, judged: [], answered: [], ended: [], rejected: [] };
    answerReports(child.stdio[reportFd] as Duplex, {
      judge: (report: Report) => {
        const id = 'machineId' in report ? report.machineId : report.exportId;
        result.judged.push(id);
        return judge(id);
      },
      answered: (report) => result.answered.push(report),
      ended: (bytes) => result.ended.push(bytes),
      rejected: (text, closed) => result.rejected.push([text, closed]),
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ ...result, code }));
  });
}

describe('answerReports against the prerun and postrun nbd-server runs', () => {
  it.each([
    [true, 0],
    [false, 1],
  ])('admitted %s: the prerun exits %i', async (admitted, code) => {
    expect(await answer(prerun, () => admitted)).toEqual({
      code,
      judged: [42],
      answered: [{ exportId: 42, versionId: 142, admitted }],
      ended: [],
      rejected: [],
    });
  });

  it('answers the postrun at once, after the ended callback ran', async () => {
    const started = Date.now();
    // Its standard input is no TCP socket here, so it can tell no count: a bare ended line.
    expect(await answer(postrun)).toEqual({ code: 0, judged: [], answered: [], ended: [null], rejected: [] });
    // It waited for the answer, not for its linger: a daemon was there to read the counts.
    expect(Date.now() - started).toBeLessThan(unansweredLingerSeconds * 1000);
  });

  it('reads two messages that arrive in one chunk as two lines, and answers both', async () => {
    // A short connection on a busy daemon: prerun's report and postrun's line read at once.
    const result = await answer(
      `printf '5 6\\nended\\n' >&${reportFd}; read -r verdict <&${reportFd}; read -r counted <&${reportFd}; [ "$counted" = counted ]`,
    );
    expect(result).toEqual({
      code: 0,
      judged: [5],
      answered: [{ exportId: 5, versionId: 6, admitted: true }],
      ended: [null],
      rejected: [],
    });
  });

  it('hands on the count an ended line carries, and takes a malformed count for no ended line', async () => {
    const result = await answer(
      `echo ended 99999999999999999 >&${reportFd}; sleep 0.2; echo ended 1234 >&${reportFd}; read -r reply <&${reportFd}; [ "$reply" = counted ]`,
    );
    expect(result).toEqual({ code: 0, judged: [], answered: [], ended: [1234], rejected: [['ended 99999999999999999', false]] });
  });

  it('judges nothing and answers nothing that is no report, and goes on reading', async () => {
    // The pause keeps the two writes apart; a verdict for the first would be read in place of the second's.
    const result = await answer(
      `echo hello >&${reportFd}; sleep 0.2; echo 5 >&${reportFd}; read -r verdict <&${reportFd}; [ "$verdict" = allow ]`,
    );
    expect(result).toEqual({
      code: 0,
      judged: [5],
      answered: [{ exportId: 5, versionId: null, admitted: true }],
      ended: [],
      rejected: [['hello', false]],
    });
  });

  it('rejects a line too long once, cut short, and reads the next line', async () => {
    const result = await answer(
      `head -c 200 /dev/zero | tr '\\0' 7 >&${reportFd}; echo >&${reportFd}; echo 8 9 >&${reportFd}; read -r verdict <&${reportFd}`,
    );
    expect(result.rejected).toEqual([['7'.repeat(64), false]]);
    expect(result.answered).toEqual([{ exportId: 8, versionId: 9, admitted: true }]);
  });

  it('closes the pipe of a process that writes more than any prerun and postrun do, which then finds no daemon', async () => {
    const result = await answer(`yes ended | head -c ${maxPipeBytes * 4} >&${reportFd}; read -r reply <&${reportFd}; [ -z "$reply" ]`);
    expect(result.code).toBe(0);
    expect(result.rejected).toHaveLength(1);
    expect(result.rejected[0]![1]).toBe(true);
    // Only what came before the bound was answered.
    expect(result.ended.length).toBeLessThanOrEqual(maxPipeBytes / 'ended\n'.length);
  });

  it('keeps the postrun waiting for the answer past the unread verdict of a prerun that did not wait for it', async () => {
    // An export with no allow list: its prerun reports and exits, and the verdict stays in the pipe.
    const unlisted = /^prerun = (.*)$/m.exec(renderNbdServerConfig([{ ...listed, allow: [] }]))![1]!;
    const child = spawn('/bin/sh', ['-c', `sh -c "$0"; sh -c "$1"`, unlisted, postrun], {
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
      timeout: 10_000,
    });
    const pipe = child.stdio[reportFd] as Duplex;
    const answeredAfterMs = 300;
    let endedAt = 0;
    answerReports(pipe, {
      judge: () => true,
      answered: () => {},
      // Answered late, so that a postrun taking the stale verdict for its answer exits first.
      ended: () => {
        endedAt = Date.now();
        const write = pipe.write.bind(pipe);
        pipe.write = ((chunk: string) => (setTimeout(() => write(chunk), answeredAfterMs), true)) as typeof pipe.write;
      },
      rejected: () => {},
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(endedAt).toBeGreaterThan(0);
    expect(Date.now() - endedAt).toBeGreaterThanOrEqual(answeredAfterMs - 20);
    expect(Date.now() - endedAt).toBeLessThan(unansweredLingerSeconds * 1000);
  });

  it('lets the postrun linger when no daemon holds the pipe any more', async () => {
    const started = Date.now();
    const child = spawn('/bin/sh', ['-c', postrun], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'], timeout: 10_000 });
    // The daemon that started the process is gone: its end of the pipe is closed.
    (child.stdio[reportFd] as Duplex).destroy();
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(unansweredLingerSeconds * 1000 - 100);
  }, 10_000);
});
