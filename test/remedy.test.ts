import { describe, expect, it } from 'vitest';
import { badInput, conflict, describeError, notFound } from '../src/errors.js';
import { parseCommandLine } from '../src/operator-cli/args.js';
import { cliRemedy } from '../src/operator-cli/remedy.js';
import type { Remedy } from '../src/remedy.js';

const mac = '52:54:00:12:34:56';
/** One of each kind: a kind added without a line here fails to compile. */
const remedies = {
  'list-machines': { kind: 'list-machines' },
  'list-exports': { kind: 'list-exports' },
  'force-remove': { kind: 'force-remove', name: 'debian' },
  'list-versions': { kind: 'list-versions', name: 'debian' },
  'edit-machine': { kind: 'edit-machine', mac },
  'make-persistent': { kind: 'make-persistent', mac },
  'set-machine-export': { kind: 'set-machine-export', mac },
  'show-machine': { kind: 'show-machine', mac },
  'list-profiles': { kind: 'list-profiles' },
  'leave-profile': { kind: 'leave-profile', name: 'rack3', macs: [mac] },
} as const satisfies { [Kind in Remedy['kind']]: Extract<Remedy, { kind: Kind }> };

describe('a refusal’s remedy, worded by each interface', () => {
  it.each(Object.values(remedies))('$kind: REST and tRPC name routes, the CLI names commands that parse', (remedy: Remedy) => {
    const rest = describeError(conflict('it is refused', remedy));
    expect(rest).toMatchObject({ code: 'CONFLICT', problem: 'it is refused', remedy });
    expect(rest.message).toMatch(/^it is refused; .*\b(GET|PATCH|DELETE) \/(machines|exports|profiles)\b/);
    expect(rest.message).not.toMatch(/nbdmux/);

    const cli = cliRemedy(remedy);
    expect(cli).not.toMatch(/\b(GET|PATCH|POST|DELETE) \//);
    const commands = [...cli.matchAll(/"nbdmux ([^"]+)"/g)].map((m) => m[1]!);
    expect(commands.length, cli).toBeGreaterThan(0);
    for (const command of commands) {
      // Each command is one the CLI takes as written (a placeholder filled in).
      const request = parseCommandLine(command.replace('EXPORT', 'debian').split(' '), {});
      expect(request.kind, command).toBe('run');
    }
    // The boot console shows no quotes; the commands are the same.
    expect(cliRemedy(remedy, false)).toBe(cli.replaceAll('"', ''));
  });

  it('names the exact commands for the refusals operators meet most', () => {
    expect(cliRemedy(remedies['edit-machine'])).toBe(
      `change it with "nbdmux machines set ${mac}" and what to change (--name, --export, --cmdline, ...)`,
    );
    expect(cliRemedy(remedies['list-versions'])).toBe('"nbdmux versions debian" lists its versions');
    expect(cliRemedy(remedies['list-exports'])).toBe('"nbdmux ls" lists them');
  });

  it('keeps the field of a bad input, with the remedy in its issue, and leaves errors without one as they were', () => {
    expect(describeError(badInput('export', 'no export "ghost"', { kind: 'list-exports' }))).toEqual({
      code: 'BAD_REQUEST',
      message: 'export: no export "ghost"; GET /exports lists them',
      issues: [{ field: 'export', message: 'no export "ghost"; GET /exports lists them' }],
      problem: 'export: no export "ghost"',
      remedy: { kind: 'list-exports' },
    });
    expect(describeError(badInput('name', 'too long'))).toEqual({
      code: 'BAD_REQUEST',
      message: 'name: too long',
      issues: [{ field: 'name', message: 'too long' }],
    });
    expect(describeError(notFound('nothing here'))).toEqual({ code: 'NOT_FOUND', message: 'nothing here' });
  });
});
