import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseCommandLine, type Invocation } from '../src/operator-cli/args.js';
import { commandTable } from '../src/operator-cli/command-table.js';
import { UsageError } from '../src/operator-cli/usage-error.js';
import { bashCompletion, completion } from '../src/operator-cli/completion.js';
import { tempDir } from '../testkit/daemon.js';

const dir = tempDir('nbdmux-completion-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const script = path.join(dir, 'nbdmux.bash');
fs.writeFileSync(script, bashCompletion());

/** What bash offers after the words typed, the last one being completed, as it does on Tab. */
function complete(line: string): string[] {
  const result = spawnSync(
    'bash',
    [
      '-c',
      'source "$1"; read -ra COMP_WORDS <<<"$2"; [[ $2 == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _nbdmux; printf "%s\\n" "${COMPREPLY[@]}"',
      '_',
      script,
      line,
    ],
    { encoding: 'utf8', cwd: dir, timeout: 10_000 },
  );
  expect(result.stderr).toBe('');
  return result.stdout.split('\n').filter(Boolean);
}

describe('nbdmux completion bash', () => {
  it('completes commands, machines subcommands, flags and paths, from the command table', () => {
    expect(complete('nbdmux ')).toEqual(
      expect.arrayContaining(['ls', 'add', 'import', 'versions', 'rollback', 'machines', 'watch', '--url']),
    );
    expect(complete('nbdmux ver')).toEqual(['versions']);
    expect(complete('nbdmux machines s')).toEqual(['set', 'show']);
    expect(complete('nbdmux --url http://127.0.0.1:4040 rm --f')).toEqual(['--force']);
    expect(complete('nbdmux machines set 52:54:00:12:34:56 --no-')).toEqual(['--no-profile', '--no-export', '--no-persistent']);
    // Nothing for a value the operator types, such as --url's.
    expect(complete('nbdmux --url ')).toEqual([]);
    fs.writeFileSync(path.join(dir, 'disk.img'), '');
    expect(complete('nbdmux add disk di')).toEqual(['disk.img']);
    expect(complete('nbdmux rm di')).toEqual([]);
    // Every command's flags are offered, so a flag added to the table completes without a change here.
    for (const { name, flags } of commandTable()) {
      const offered = complete(`nbdmux ${name} --`);
      for (const flag of flags) expect(offered, name).toContain(flag);
    }
  });

  it('passes ShellCheck, and names the one shell it knows when asked for another', () => {
    const check = spawnSync('shellcheck', ['-s', 'bash', script], { encoding: 'utf8' });
    expect(check.error, 'shellcheck comes from scripts/setup --test').toBeUndefined();
    expect([check.status, check.stdout]).toEqual([0, '']);
    const request = parseCommandLine(['completion', 'zsh'], {});
    expect(request.kind).toBe('run');
    const out = { write: () => true };
    expect(() => completion(undefined, (request as { invocation: Invocation }).invocation, out)).toThrow(UsageError);
  });
});
