import { parseArgs } from 'node:util';

export const defaultUrl = 'http://localhost:4040';

export const usage = `Usage: nbdmux [--url URL] [--json] COMMAND [ARGS]

Manages a running nbdmux daemon: its exports, connections and health.

Commands:
  ls                           the exports: serving, then draining
  add NAME FILE [--rw] [--cow] export FILE (a path on the daemon's machine; a relative one
                               is taken from this directory) as NAME, read-only unless
                               --rw (clients write the image) or --cow (each client writes
                               to its own copy, discarded when it disconnects)
  rm NAME [--force]            stop exporting NAME; live connections drain unless --force
                               cuts them now
  show NAME                    one export and its live connections
  connections [--live] [--limit N]
                               recent NBD connections, newest first (--live: open ones only)
  watch                        live events and connections until Ctrl-C
  health                       whether new NBD clients can be served; exit 1 when not

Options:
  --url URL    the daemon's HTTP address (default $NBDMUX_URL, else ${defaultUrl})
  --json       print JSON for scripts instead of tables (watch: one JSON object per line)
  --help       print this help
  --version    print the version

The admin password, when the daemon has one, is read from $NBDMUX_ADMIN_PASSWORD.
Exit status: 0 done, 1 failed (refused, unreachable, unhealthy), 2 usage error.
`;

/** Each command's positional arguments and the flags it accepts beyond the global ones. */
const commandSpecs = {
  ls: { args: [], flags: [] },
  add: { args: ['NAME', 'FILE'], flags: ['rw', 'cow'] },
  rm: { args: ['NAME'], flags: ['force'] },
  show: { args: ['NAME'], flags: [] },
  connections: { args: [], flags: ['live', 'limit'] },
  watch: { args: [], flags: [] },
  health: { args: [], flags: [] },
} as const satisfies Record<string, { args: readonly string[]; flags: readonly string[] }>;

export type CommandName = keyof typeof commandSpecs;

export interface Invocation {
  command: CommandName;
  args: string[];
  url: string;
  json: boolean;
  rw: boolean;
  cow: boolean;
  force: boolean;
  live: boolean;
  limit: number | undefined;
}

export type Request = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; invocation: Invocation };

export class UsageError extends Error {}

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
        rw: { type: 'boolean' },
        cow: { type: 'boolean' },
        force: { type: 'boolean' },
        live: { type: 'boolean' },
        limit: { type: 'string' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };

  const [command, ...args] = positionals;
  if (command === undefined) throw new UsageError('no command given');
  if (!Object.hasOwn(commandSpecs, command)) throw new UsageError(`unknown command "${command}"`);
  const spec: { args: readonly string[]; flags: readonly string[] } = commandSpecs[command as CommandName];
  for (const flag of ['rw', 'cow', 'force', 'live', 'limit'] as const) {
    if (values[flag] !== undefined && !spec.flags.includes(flag)) throw new UsageError(`${command} takes no --${flag}`);
  }
  if (args.length !== spec.args.length) {
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
      rw: values.rw ?? false,
      cow: values.cow ?? false,
      force: values.force ?? false,
      live: values.live ?? false,
      limit: values.limit === undefined ? undefined : checkedLimit(values.limit),
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

/** Only the syntax: the daemon judges the range, with its own message. */
function checkedLimit(text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`--limit must be a whole number, got ${JSON.stringify(text)}`);
  return Number(text);
}
