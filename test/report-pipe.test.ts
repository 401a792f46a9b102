import { spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { renderNbdServerConfig, reportFd, type ServedExport } from '../src/supervisor/nbd-config.js';
import { answerReports, parseReport, verdictLine, type AnsweredReport, type Report } from '../src/supervisor/report-pipe.js';

describe('the report pipe protocol', () => {
  it.each<[text: string, report: { exportId: number; versionId: number | null } | null]>([
    ['7 9\n', { exportId: 7, versionId: 9 }],
    [' 12 15 \n', { exportId: 12, versionId: 15 }],
    // What the prerun of a process started before versions writes: it still counts for its export.
    ['7\n', { exportId: 7, versionId: null }],
    ['3 5\n4 6\n', { exportId: 3, versionId: 5 }],
    ['', null],
    ['abc\n', null],
    ['7 x\n', null],
    ['9007199254740993 1\n', null],
    ['1 9007199254740993\n', null],
  ])('reads the report %j as %j', (text, report) => {
    expect(parseReport(text)).toEqual(report);
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

/**
 * Runs `command` the way nbd-server runs a prerun (system(), so /bin/sh -c) with a real pipe at
 * the report descriptor, answered by answerReports as the spawner does.
 */
function answer(
  command: string,
  judge: (exportId: number) => boolean,
): Promise<{ code: number | null; judged: number[]; answered: Array<AnsweredReport | null> }> {
  return new Promise((resolve, reject) => {
    const stdio: Array<'ignore' | 'pipe'> = Array.from({ length: reportFd + 1 }, (_, fd) => (fd === reportFd ? 'pipe' : 'ignore'));
    const child = spawn('/bin/sh', ['-c', command], { stdio, timeout: 10_000 });
    const judged: number[] = [];
    const answered: Array<AnsweredReport | null> = [];
    const judgeAndNote = (report: Report) => {
      const id = 'machineId' in report ? report.machineId : report.exportId;
      judged.push(id);
      return judge(id);
    };
    answerReports(child.stdio[reportFd] as Duplex, judgeAndNote, (report) => answered.push(report));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, judged, answered }));
  });
}

describe('answerReports against the prerun nbd-server runs', () => {
  it.each([
    [true, 0],
    [false, 1],
  ])('admitted %s: the prerun exits %i', async (admitted, code) => {
    expect(await answer(prerun, () => admitted)).toEqual({ code, judged: [42], answered: [{ exportId: 42, versionId: 142, admitted }] });
  });

  it('judges nothing and answers nothing that is no report', async () => {
    // The pause keeps the two writes apart; a verdict for the first would be read in place of the second's.
    const result = await answer(
      `echo hello >&${reportFd}; sleep 0.2; echo 5 >&${reportFd}; read -r verdict <&${reportFd}; [ "$verdict" = allow ]`,
      () => true,
    );
    expect(result).toEqual({ code: 0, judged: [5], answered: [null, { exportId: 5, versionId: null, admitted: true }] });
  });
});
