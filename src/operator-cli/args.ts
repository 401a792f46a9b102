import { parseArgs } from 'node:util';
import {
  commandFlags,
  commandSpecs,
  groups,
  type CommandName,
  type CommandSpec,
  type FlagName,
  type FlagSpec,
  type FlagValues,
} from './command-table.js';
import { UsageError } from './usage-error.js';

export const defaultUrl = 'http://localhost:4040';

export type Invocation = {
  command: CommandName;
  args: string[];
  url: string;
  json: boolean;
} & FlagValues;

export type Request = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; invocation: Invocation };

const synopsisWidth = 29;
const helpWidth = 62;

/** The command's words: its name, its arguments, and each flag as one word, `[--export EXPORT]`, never split by wrapping. */
function synopsis(name: string, spec: CommandSpec): string[] {
  const flags = spec.flags.map((flag) => {
    const option: FlagSpec = commandFlags[flag];
    return `[--${flag}${option.placeholder ? ` ${option.placeholder}` : ''}]${option.multiple ? '...' : ''}`;
  });
  return [name, ...spec.args, ...flags];
}

/** Words wrapped to lines of at most `width` characters (a longer word has a line of its own). */
function wrap(words: readonly string[], width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of words) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  return [...lines, line];
}

function commandHelp(): string {
  const indent = ' '.repeat(2 + synopsisWidth);
  return Object.entries(commandSpecs)
    .map(([name, spec]) => {
      // A synopsis longer than a line goes on over more, indented under the command's name.
      const heads = wrap(synopsis(name, spec), synopsisWidth + helpWidth - 4).map((line, i) => (i === 0 ? `  ${line}` : `      ${line}`));
      const [first = '', ...rest] = wrap(spec.help.split(' '), helpWidth);
      const lines =
        heads.length === 1 && heads[0]!.length < indent.length - 1 ? [heads[0]!.padEnd(indent.length) + first] : [...heads, indent + first];
      return [...lines, ...rest.map((line) => indent + line)].join('\n');
    })
    .join('\n');
}

export const usage = `Usage: nbdmux [--url URL] [--json] COMMAND [ARGS]

Manages a running nbdmux daemon: its exports, machines, connections and health.

Commands:
${commandHelp()}

Options:
  --url URL    the daemon's HTTP address (default $NBDMUX_URL, else ${defaultUrl})
  --json       print JSON for scripts instead of tables (watch: one JSON object per line)
  --help       print this help
  --version    print the version

The admin password, when the daemon has one, is read from $NBDMUX_ADMIN_PASSWORD.
Exit status: 0 done, 1 failed (refused, unreachable, unhealthy), 2 usage error.
`;

export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv): Request {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
        ...commandFlags,
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };

  const [first, ...rest] = positionals;
  if (first === undefined) throw new UsageError('no command given');
  // `machines` or `profiles` alone lists them; otherwise its next word names the command.
  const [command, args] = groups.includes(first) ? [`${first} ${rest[0] ?? 'list'}`, rest.slice(1)] : [first, rest];
  if (!Object.hasOwn(commandSpecs, command)) throw new UsageError(`unknown command "${command}"`);
  const spec: CommandSpec = commandSpecs[command as CommandName];
  const flagNames = Object.keys(commandFlags) as FlagName[];
  for (const flag of flagNames) {
    if (values[flag] !== undefined && !spec.flags.includes(flag)) throw new UsageError(`${command} takes no --${flag}`);
  }
  const required = spec.args.filter((arg) => !arg.startsWith('['));
  const variadic = spec.args.some((arg) => arg.endsWith('...]'));
  if (args.length < required.length || (!variadic && args.length > spec.args.length)) {
    const expected = spec.args.length === 0 ? 'no arguments' : spec.args.join(' ');
    throw new UsageError(`${command} takes ${expected}, got ${args.length === 0 ? 'none' : args.map((a) => JSON.stringify(a)).join(' ')}`);
  }

  return {
    kind: 'run',
    invocation: {
      command: command as CommandName,
      args,
      url: checkedUrl(values.url ?? env.NBDMUX_URL ?? defaultUrl, values.url !== undefined ? '--url' : 'NBDMUX_URL'),
      json: values.json ?? false,
      ...(Object.fromEntries(
        flagNames.map((flag) => [flag, (commandFlags[flag].read as (value: unknown) => unknown)(values[flag])]),
      ) as FlagValues),
    },
  };
}

function checkedUrl(url: string, source: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`${source} ${JSON.stringify(url)} is not a URL; give the daemon's address, e.g. ${defaultUrl}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new UsageError(`${source} ${JSON.stringify(url)} must start with http:// or https://, e.g. ${defaultUrl}`);
  }
  return url;
}
