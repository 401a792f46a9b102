import { parseArgs } from 'node:util';
import path from 'node:path';
import { z } from 'zod';
import { canonicalHostName } from './http/allowed-hosts.js';
import { logLevels } from './log.js';
import { parseCidr } from './rules/allow-list.js';
import { exportNamePattern } from './rules/names.js';

export const usage = `Usage: nbdmux-server --data-dir DIR [options]

Serves disk images as named NBD exports on one port, managed over HTTP (tRPC, REST, dashboard).

Options (each also read from the environment variable shown; a flag wins):
  --data-dir DIR          state (SQLite, nbd-server config); required       NBDMUX_DATA_DIR
  --port N                HTTP port (default 4040)                           NBDMUX_PORT
  --bind ADDR             HTTP listen address (default: all addresses)       NBDMUX_BIND
  --nbd-port N            NBD port (default 10809)                           NBDMUX_NBD_PORT
  --nbd-bind ADDR         NBD listen address (default: --bind)               NBDMUX_NBD_BIND
  --nbd-server-bin PATH   nbd-server binary (default nbd-server)             NBDMUX_NBD_SERVER_BIN
  --image-root DIR        only files under DIR may be exported; repeatable    NBDMUX_IMAGE_ROOTS (a:b)
  --image-store DIR       where imported images are kept; always an image    NBDMUX_IMAGE_STORE
                          root (default DATA_DIR/images)
  --max-imports N         imports running at once; more wait (default 2)     NBDMUX_MAX_IMPORTS
  --import-min-rate BYTES a download slower than this per 60 s of waiting    NBDMUX_IMPORT_MIN_RATE
                          on it fails (default 65536; 0: no minimum)
  --import-tool-timeout S xz, zstd or qemu-img reading and writing nothing   NBDMUX_IMPORT_TOOL_TIMEOUT
                          this long is killed, failing its import (60)
  --max-connections N     live NBD connections at most (default 256)         NBDMUX_MAX_CONNECTIONS
  --nbd-max-pending-per-client N
                          connections of one address that have not chosen    NBDMUX_NBD_MAX_PENDING_PER_CLIENT
                          an export yet, at most; below --max-connections
                          (default 8, or --max-connections if smaller)
  --nbd-negotiation-timeout SECONDS
                          a client that has chosen no export this long       NBDMUX_NBD_NEGOTIATION_TIMEOUT
                          after connecting is cut (default 10)
  --nbd-allow CIDR        only these clients may use the NBD port; repeatable NBDMUX_NBD_ALLOW (a,b)
  --allowed-host NAME     a name the HTTP port answers to in Host, besides   NBDMUX_ALLOWED_HOSTS (a,b)
                          localhost and the bind address; repeatable
  --max-http-connections N
                          open HTTP connections at most (default 1024)       NBDMUX_MAX_HTTP_CONNECTIONS
  --max-http-per-client N open HTTP connections per client address (64)      NBDMUX_MAX_HTTP_PER_CLIENT
  --http-request-timeout S
                          seconds a client has to send a request (10)        NBDMUX_HTTP_REQUEST_TIMEOUT
  --max-websockets N      open WebSockets (subscriptions) at most (256)       NBDMUX_MAX_WEBSOCKETS
  --max-websockets-per-client N
                          open WebSockets per client address (32)            NBDMUX_MAX_WEBSOCKETS_PER_CLIENT
  --retain-days N         closed connections and events older than N         NBDMUX_RETAIN_DAYS
                          days are deleted (default 30)
  --keep-versions N       imported images of the newest N versions of each   NBDMUX_KEEP_VERSIONS
                          export are kept for rollback (default 3)
  --nbd-public-port N     the NBD port booting machines dial, when a port    NBDMUX_NBD_PUBLIC_PORT
                          forward or NAT changes it (default: --nbd-port)
  --ramboot-kit DIR       the ramboot kit (vmlinuz, initrd.img) that boots   NBDMUX_RAMBOOT_KIT
                          exports over HTTP (see ramboot/build-kit)
  --boot-default NAME     the export /boot.ipxe's menu boots unless someone  NBDMUX_BOOT_DEFAULT
                          chooses another
  --boot-menu-timeout S   seconds the menu waits before booting the default  NBDMUX_BOOT_MENU_TIMEOUT
                          (default 10; 0 boots it with no menu)
  --log-level LEVEL       debug, info, warn or error (default info)          NBDMUX_LOG_LEVEL
  --help                  print this help
  --version               print the version

Environment only (never on the command line, where every user can read it):
  NBDMUX_ADMIN_PASSWORD   when set, every control-plane request must authenticate
  NBDMUX_SESSION_SECRET   signs session cookies (default: generated once into DATA_DIR/session-secret)
`;

const port = (flag: string) =>
  z.coerce
    .number({ error: `${flag} must be a port number from 0 to 65535` })
    .int(`${flag} must be a port number from 0 to 65535`)
    .min(0, `${flag} must be a port number from 0 to 65535`)
    .max(65535, `${flag} must be a port number from 0 to 65535`);

/** Low enough that a few addresses sending nothing cannot fill the default --max-connections. */
const defaultMaxPendingPerClient = 8;

const count = (flag: string, fallback: number) =>
  z.coerce.number().int(`${flag} must be a whole number`).min(1, `${flag} must be at least 1`).max(65536, `${flag} must be at most 65536`).default(fallback);

const configSchema = z.object({
  dataDir: z.string({ error: '--data-dir (or NBDMUX_DATA_DIR) is required' }).min(1, '--data-dir must not be empty'),
  port: port('--port').default(4040),
  bind: z.string().min(1).optional(),
  nbdPort: port('--nbd-port').default(10809),
  nbdBind: z.string().min(1).optional(),
  nbdServerBin: z.string().min(1).default('nbd-server'),
  imageRoots: z.array(z.string().min(1)).default([]),
  imageStore: z.string().min(1, '--image-store must not be empty').optional(),
  maxImports: z.coerce.number().int('--max-imports must be a whole number').min(1, '--max-imports must be at least 1').max(64, '--max-imports must be at most 64').default(2),
  importMinRate: z.coerce
    .number()
    .int('--import-min-rate must be a whole number of bytes')
    .min(0, '--import-min-rate must be at least 0 bytes (0: no minimum)')
    .max(1 << 30, '--import-min-rate must be at most 1073741824 bytes')
    .default(64 << 10),
  importToolTimeout: z.coerce
    .number()
    .int('--import-tool-timeout must be a whole number of seconds')
    .min(1, '--import-tool-timeout must be at least 1 second')
    .max(86400, '--import-tool-timeout must be at most 86400 seconds')
    .default(60),
  maxConnections: z.coerce
    .number()
    .int('--max-connections must be a whole number')
    .min(1, '--max-connections must be at least 1')
    .max(65536, '--max-connections must be at most 65536')
    .default(256),
  nbdMaxPendingPerClient: z.coerce
    .number()
    .int('--nbd-max-pending-per-client must be a whole number')
    .min(1, '--nbd-max-pending-per-client must be at least 1')
    .optional(),
  nbdNegotiationTimeout: z.coerce
    .number()
    .int('--nbd-negotiation-timeout must be a whole number of seconds')
    .min(1, '--nbd-negotiation-timeout must be at least 1 second')
    .max(3600, '--nbd-negotiation-timeout must be at most 3600 seconds')
    .default(10),
  retainDays: z.coerce
    .number()
    .int('--retain-days must be a whole number of days')
    .min(1, '--retain-days must be at least 1 day')
    .max(36500, '--retain-days must be at most 36500 days')
    .default(30),
  /** Imported images of older versions are deleted once no connection uses them. */
  keepVersions: count('--keep-versions', 3),
  logLevel: z.enum(logLevels, { error: `--log-level must be one of ${logLevels.join(', ')}` }).default('info'),
  allowedHosts: z
    .array(z.string().refine((name) => canonicalHostName(name) !== null, { error: (issue) => `--allowed-host: not a host name or IP address: ${String(issue.input)}` }))
    .default([]),
  maxHttpConnections: count('--max-http-connections', 1024),
  maxHttpPerClient: count('--max-http-per-client', 64),
  maxWebSockets: count('--max-websockets', 256),
  maxWebSocketsPerClient: count('--max-websockets-per-client', 32),
  httpRequestTimeout: z.coerce
    .number()
    .int('--http-request-timeout must be a whole number of seconds')
    .min(1, '--http-request-timeout must be at least 1 second')
    .max(3600, '--http-request-timeout must be at most 3600 seconds')
    .default(10),
  nbdPublicPort: port('--nbd-public-port').min(1, '--nbd-public-port must be a port number from 1 to 65535').optional(),
  rambootKit: z.string().min(1, '--ramboot-kit must not be empty').optional(),
  bootDefault: z.string().regex(exportNamePattern, { error: (issue) => `--boot-default: not an export name: ${String(issue.input)}` }).optional(),
  bootMenuTimeout: z.coerce
    .number()
    .int('--boot-menu-timeout must be a whole number of seconds')
    .min(0, '--boot-menu-timeout must be at least 0 seconds')
    .max(3600, '--boot-menu-timeout must be at most 3600 seconds')
    .default(10),
  nbdAllow: z.array(z.string().refine((cidr) => parseCidr(cidr) !== null, { error: (issue) => `--nbd-allow: not an IP address or CIDR range: ${String(issue.input)}` })).default([]),
  adminPassword: z.string().min(1, 'NBDMUX_ADMIN_PASSWORD must not be empty (unset it to disable authentication)').optional(),
  sessionSecret: z.string().min(32, 'NBDMUX_SESSION_SECRET must be at least 32 characters').optional(),
});

/** The pending cap protects other clients only if it leaves them some of --max-connections. */
const checkedConfigSchema = configSchema
  .superRefine(({ nbdMaxPendingPerClient, maxConnections }, ctx) => {
    if (nbdMaxPendingPerClient !== undefined && nbdMaxPendingPerClient >= maxConnections) {
      ctx.addIssue({ code: 'custom', message: `--nbd-max-pending-per-client (${nbdMaxPendingPerClient}) must be below --max-connections (${maxConnections}), so that one address cannot hold every connection` });
    }
  })
  .transform((config) => ({ ...config, nbdMaxPendingPerClient: config.nbdMaxPendingPerClient ?? Math.min(defaultMaxPendingPerClient, config.maxConnections) }));

/** The image store always has a path: DATA_DIR/images unless given (see parseCommandLine). */
export type Config = Omit<z.infer<typeof checkedConfigSchema>, 'imageStore'> & { imageStore: string };

export type CliRequest = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: Config };

export class ConfigError extends Error {}

/** Reads flags and environment into a validated config; a flag wins over its variable. */
export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv): CliRequest {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        'data-dir': { type: 'string' },
        port: { type: 'string' },
        bind: { type: 'string' },
        'nbd-port': { type: 'string' },
        'nbd-bind': { type: 'string' },
        'nbd-server-bin': { type: 'string' },
        'image-root': { type: 'string', multiple: true },
        'image-store': { type: 'string' },
        'max-imports': { type: 'string' },
        'import-min-rate': { type: 'string' },
        'import-tool-timeout': { type: 'string' },
        'max-connections': { type: 'string' },
        'nbd-max-pending-per-client': { type: 'string' },
        'nbd-negotiation-timeout': { type: 'string' },
        'nbd-allow': { type: 'string', multiple: true },
        'allowed-host': { type: 'string', multiple: true },
        'max-http-connections': { type: 'string' },
        'max-http-per-client': { type: 'string' },
        'http-request-timeout': { type: 'string' },
        'max-websockets': { type: 'string' },
        'max-websockets-per-client': { type: 'string' },
        'retain-days': { type: 'string' },
        'keep-versions': { type: 'string' },
        'nbd-public-port': { type: 'string' },
        'ramboot-kit': { type: 'string' },
        'boot-default': { type: 'string' },
        'boot-menu-timeout': { type: 'string' },
        'log-level': { type: 'string' },
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

  const envRoots = env.NBDMUX_IMAGE_ROOTS?.split(':').filter((root) => root !== '');
  const bind = values.bind ?? env.NBDMUX_BIND;
  const parsed = checkedConfigSchema.safeParse({
    dataDir: values['data-dir'] ?? env.NBDMUX_DATA_DIR,
    port: values.port ?? env.NBDMUX_PORT,
    bind,
    nbdPort: values['nbd-port'] ?? env.NBDMUX_NBD_PORT,
    nbdBind: values['nbd-bind'] ?? env.NBDMUX_NBD_BIND ?? bind,
    nbdServerBin: values['nbd-server-bin'] ?? env.NBDMUX_NBD_SERVER_BIN,
    imageRoots: values['image-root'] ?? envRoots,
    imageStore: values['image-store'] ?? env.NBDMUX_IMAGE_STORE,
    maxImports: values['max-imports'] ?? env.NBDMUX_MAX_IMPORTS,
    importMinRate: values['import-min-rate'] ?? env.NBDMUX_IMPORT_MIN_RATE,
    importToolTimeout: values['import-tool-timeout'] ?? env.NBDMUX_IMPORT_TOOL_TIMEOUT,
    maxConnections: values['max-connections'] ?? env.NBDMUX_MAX_CONNECTIONS,
    nbdMaxPendingPerClient: values['nbd-max-pending-per-client'] ?? env.NBDMUX_NBD_MAX_PENDING_PER_CLIENT,
    nbdNegotiationTimeout: values['nbd-negotiation-timeout'] ?? env.NBDMUX_NBD_NEGOTIATION_TIMEOUT,
    retainDays: values['retain-days'] ?? env.NBDMUX_RETAIN_DAYS,
    keepVersions: values['keep-versions'] ?? env.NBDMUX_KEEP_VERSIONS,
    nbdPublicPort: values['nbd-public-port'] ?? env.NBDMUX_NBD_PUBLIC_PORT,
    rambootKit: values['ramboot-kit'] ?? env.NBDMUX_RAMBOOT_KIT,
    bootDefault: values['boot-default'] ?? env.NBDMUX_BOOT_DEFAULT,
    bootMenuTimeout: values['boot-menu-timeout'] ?? env.NBDMUX_BOOT_MENU_TIMEOUT,
    logLevel: values['log-level'] ?? env.NBDMUX_LOG_LEVEL,
    allowedHosts: values['allowed-host'] ?? env.NBDMUX_ALLOWED_HOSTS?.split(',').map((name) => name.trim()).filter((name) => name !== ''),
    maxHttpConnections: values['max-http-connections'] ?? env.NBDMUX_MAX_HTTP_CONNECTIONS,
    maxHttpPerClient: values['max-http-per-client'] ?? env.NBDMUX_MAX_HTTP_PER_CLIENT,
    httpRequestTimeout: values['http-request-timeout'] ?? env.NBDMUX_HTTP_REQUEST_TIMEOUT,
    maxWebSockets: values['max-websockets'] ?? env.NBDMUX_MAX_WEBSOCKETS,
    maxWebSocketsPerClient: values['max-websockets-per-client'] ?? env.NBDMUX_MAX_WEBSOCKETS_PER_CLIENT,
    nbdAllow: values['nbd-allow'] ?? env.NBDMUX_NBD_ALLOW?.split(',').filter((cidr) => cidr.trim() !== ''),
    adminPassword: env.NBDMUX_ADMIN_PASSWORD,
    sessionSecret: env.NBDMUX_SESSION_SECRET,
  });
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
