import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { options, type OptionSpec } from './options.js';

type Options = typeof options;
type OptionKey = keyof Options;

/** Low enough that a few addresses sending nothing cannot fill the default --max-connections. */
const defaultMaxPendingPerClient = 8;

const configSchema = z.object(
  Object.fromEntries(Object.entries(options).map(([key, option]) => [key, option.schema])) as { [K in OptionKey]: Options[K]['schema'] },
);

/** The pending cap protects other clients only if it leaves them some of --max-connections. */
const checkedConfigSchema = configSchema
  .superRefine(({ nbdMaxPendingPerClient, maxConnections }, ctx) => {
    if (nbdMaxPendingPerClient !== undefined && nbdMaxPendingPerClient >= maxConnections) {
      ctx.addIssue({
        code: 'custom',
        message: `--nbd-max-pending-per-client (${nbdMaxPendingPerClient}) must be below --max-connections (${maxConnections}), so that one address cannot hold every connection`,
      });
    }
  })
  .transform((config) => ({
    ...config,
    nbdMaxPendingPerClient: config.nbdMaxPendingPerClient ?? Math.min(defaultMaxPendingPerClient, config.maxConnections),
  }));

/** The image store always has a path: DATA_DIR/images unless given (see parseCommandLine). */
export type Config = Omit<z.infer<typeof checkedConfigSchema>, 'imageStore'> & { imageStore: string };

export type CliRequest = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: Config };

export class ConfigError extends Error {}

const specs: ReadonlyArray<[OptionKey, OptionSpec]> = Object.entries(options) as Array<[OptionKey, OptionSpec]>;

/** Reads flags and environment into a validated config; a flag wins over its variable. */
export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv): CliRequest {
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        ...Object.fromEntries(
          specs.flatMap(([, spec]) =>
            spec.flag === undefined ? [] : [[spec.flag, { type: 'string' as const, multiple: spec.list !== undefined }]],
          ),
        ),
        help: { type: 'boolean' },
        version: { type: 'boolean' },
      },
    }));
  } catch (err) {
    // parseArgs explains some mistakes over several lines; an operator gets one.
    throw new ConfigError(`${(err as Error).message.replace(/\s*\n\s*/g, ' ')} (see --help)`);
  }
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };

  const given: Partial<Record<OptionKey, unknown>> = {};
  for (const [key, spec] of specs) {
    const fromEnv = env[spec.env];
    given[key] =
      (spec.flag === undefined ? undefined : values[spec.flag]) ??
      (spec.list === undefined || fromEnv === undefined ? fromEnv : splitList(fromEnv, spec.list));
  }
  given.nbdBind ??= given.bind;
  const parsed = checkedConfigSchema.safeParse(given);
  if (!parsed.success) throw new ConfigError(parsed.error.issues[0]!.message);
  const config = parsed.data;
  const dataDir = path.resolve(config.dataDir);
  return {
    kind: 'run',
    config: {
      ...config,
      dataDir,
      imageStore: path.resolve(config.imageStore ?? path.join(dataDir, 'images')),
      imageRoots: config.imageRoots.map((r) => path.resolve(r)),
      rambootKit: config.rambootKit === undefined ? undefined : path.resolve(config.rambootKit),
    },
  };
}

function splitList(text: string, separator: string): string[] {
  return text
    .split(separator)
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

const helpWidth = 100;

/** `nbdmux-server --help`, from the option table. */
export const usage = [
  'Usage: nbdmux-server --data-dir DIR [options]',
  '',
  'Serves disk images as named NBD exports on one port, managed over HTTP (tRPC, REST, dashboard).',
  '',
  'Options (each also read from the environment variable shown; a flag wins):',
  ...specs.flatMap(([, spec]) => (spec.flag === undefined ? [] : helpEntry(`--${spec.flag} ${spec.value ?? ''}`.trimEnd(), spec))),
  '  --help                          print this help',
  '  --version                       print the version',
  '',
  'Environment only (never on the command line, where every user can read it):',
  ...specs.flatMap(([, spec]) => (spec.flag === undefined ? helpEntry(spec.env, spec) : [])),
  '',
].join('\n');

/** The flag and its variable on one line, then what it does and its default, wrapped. */
function helpEntry(name: string, spec: OptionSpec): string[] {
  const head =
    spec.flag === undefined
      ? `  ${name}`
      : `  ${name.padEnd(Math.max(32, name.length + 2))}${spec.env}${spec.list ? ` (${['a', 'b'].join(spec.list)})` : ''}`;
  const facts = [
    spec.list ? 'repeatable' : '',
    spec.flag === undefined || spec.default === 'required' ? '' : `default ${spec.default.replaceAll('`', '')}`,
  ].filter((fact) => fact !== '');
  const text = `${spec.help}${spec.default === 'required' ? '; required' : ''}${facts.length > 0 ? ` (${facts.join('; ')})` : ''}`;
  return [head, ...wrap(text, helpWidth - 6).map((line) => `      ${line}`)];
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  return line === '' ? lines : [...lines, line];
}

/** The reference page of every setting (docs/reference/server-flags.md), from the option table. */
export function renderFlagsReference(): string {
  const row = (spec: OptionSpec) =>
    `| ${spec.flag === undefined ? '' : `\`--${spec.flag}${spec.value ? ` ${spec.value}` : ''}\``} | \`${spec.env}\`${spec.list ? ` (\`${['a', 'b'].join(spec.list)}\`)` : ''} | ${spec.default} | ${spec.doc ?? spec.help}${spec.list ? ' (repeatable)' : ''} |`;
  return [
    '# nbdmux-server: flags and environment variables',
    '',
    '<!-- Generated from src/options.ts by `npm run docs`; test/options.test.ts fails when it differs. -->',
    '',
    'Every flag has an environment variable; the flag wins. The secrets have a variable only, since',
    "every user of the machine can read a process's command line. A repeatable flag is given once per",
    'value; its variable lists the values with the separator shown.',
    '',
    '| Flag | Variable | Default | Meaning |',
    '|---|---|---|---|',
    ...specs.map(([, spec]) => row(spec)),
    '| `--help`, `--version` | | | |',
    '',
  ].join('\n');
}
