import { z } from 'zod';
import { logLevels } from './log.js';
import { parseCidr } from './rules/allow-list.js';
import { canonicalHostName } from './rules/host-name.js';
import { exportNamePattern } from './rules/names.js';

/**
 * One of the daemon's settings: its flag (none for a secret, which only the environment may
 * carry), its environment variable, how it is validated, and how --help and the reference page
 * (docs/reference/server-flags.md, generated from this table) describe it.
 */
export interface OptionSpec {
  /** Without the dashes; absent for a setting read from the environment only. */
  flag?: string;
  /** What the flag takes, as --help names it: `DIR`, `N`. */
  value?: string;
  env: string;
  /** Repeatable: the flag may be given again, the variable lists values separated by this. */
  list?: ':' | ',';
  /** Validates the text (or texts) given, and supplies the default. */
  schema: z.ZodType;
  /** The default in words, as the reference shows it. */
  default: string;
  /** One line in --help. */
  help: string;
  /** The reference's words, where they say more than `help`. */
  doc?: string;
}

/** `--flag must be a whole number of UNITs from MIN to MAX`, each bound with its own message, as operators meet them. */
function wholeNumber(flag: string, min: number, max: number, units?: [one: string, many: string]) {
  const unit = (n: number) => (units === undefined ? '' : ` ${n === 1 ? units[0] : units[1]}`);
  return z.coerce
    .number()
    .int(`--${flag} must be a whole number${units === undefined ? '' : ` of ${units[1]}`}`)
    .min(min, `--${flag} must be at least ${min}${unit(min)}`)
    .max(max, `--${flag} must be at most ${max}${unit(max)}`);
}

const seconds: [string, string] = ['second', 'seconds'];

function port(flag: string) {
  const message = `--${flag} must be a port number from 0 to 65535`;
  return z.coerce.number({ error: message }).int(message).min(0, message).max(65535, message);
}

function nonEmpty(flag: string) {
  return z.string().min(1, `--${flag} must not be empty`);
}

/** Every setting of nbdmux-server, in the order --help and the reference list them. */
export const options = {
  dataDir: {
    flag: 'data-dir',
    value: 'DIR',
    env: 'NBDMUX_DATA_DIR',
    schema: z.string({ error: '--data-dir (or NBDMUX_DATA_DIR) is required' }).min(1, '--data-dir must not be empty'),
    default: 'required',
    help: 'state: SQLite, nbd-server config',
    doc: 'state: `state.db` (SQLite), `nbd-server.conf`; kept private (see [security](../security.md))',
  },
  port: {
    flag: 'port',
    value: 'N',
    env: 'NBDMUX_PORT',
    schema: port('port').default(4040),
    default: '4040',
    help: 'HTTP port (tRPC, REST, dashboard); 0 picks a free one',
  },
  bind: {
    flag: 'bind',
    value: 'ADDR',
    env: 'NBDMUX_BIND',
    schema: nonEmpty('bind').optional(),
    default: 'all addresses',
    help: 'HTTP listen address',
  },
  nbdPort: {
    flag: 'nbd-port',
    value: 'N',
    env: 'NBDMUX_NBD_PORT',
    schema: port('nbd-port').default(10809),
    default: '10809',
    help: 'NBD port',
  },
  nbdBind: {
    flag: 'nbd-bind',
    value: 'ADDR',
    env: 'NBDMUX_NBD_BIND',
    schema: nonEmpty('nbd-bind').optional(),
    default: '`--bind`',
    help: 'NBD listen address',
  },
  nbdServerBin: {
    flag: 'nbd-server-bin',
    value: 'PATH',
    env: 'NBDMUX_NBD_SERVER_BIN',
    schema: nonEmpty('nbd-server-bin').default('nbd-server'),
    default: '`nbd-server`',
    help: 'the nbd-server binary',
  },
  imageRoots: {
    flag: 'image-root',
    value: 'DIR',
    env: 'NBDMUX_IMAGE_ROOTS',
    list: ':',
    schema: z.array(nonEmpty('image-root')).default([]),
    default: 'none',
    help: 'only files under these may be exported',
  },
  imageStore: {
    flag: 'image-store',
    value: 'DIR',
    env: 'NBDMUX_IMAGE_STORE',
    schema: nonEmpty('image-store').optional(),
    default: '`DATA_DIR/images`',
    help: 'where imported images are kept; always an image root',
    doc: 'where imported images are kept (see [importing images](../images.md#importing-images)); always an image root',
  },
  maxImports: {
    flag: 'max-imports',
    value: 'N',
    env: 'NBDMUX_MAX_IMPORTS',
    schema: wholeNumber('max-imports', 1, 64).default(2),
    default: '2',
    help: 'imports running at once (1 to 64); more wait their turn',
  },
  importMinRate: {
    flag: 'import-min-rate',
    value: 'BYTES',
    env: 'NBDMUX_IMPORT_MIN_RATE',
    schema: z.coerce
      .number()
      .int('--import-min-rate must be a whole number of bytes')
      .min(0, '--import-min-rate must be at least 0 bytes (0: no minimum)')
      .max(1 << 30, '--import-min-rate must be at most 1073741824 bytes')
      .default(64 << 10),
    default: '65536',
    help: 'a download slower than this per 60 s of waiting on it fails; 0: no minimum',
    doc: 'an http(s) download must bring this much in every 60 s the import waits on it, else it fails as `too-slow`; 0: no minimum',
  },
  importToolTimeout: {
    flag: 'import-tool-timeout',
    value: 'S',
    env: 'NBDMUX_IMPORT_TOOL_TIMEOUT',
    schema: wholeNumber('import-tool-timeout', 1, 86400, seconds).default(60),
    default: '60',
    help: 'xz, zstd or qemu-img reading and writing nothing this long is killed, failing its import',
    doc: 'xz, zstd or qemu-img that reads and writes nothing this long (not counting time it waits for the download) is killed and its import fails as `tool-timeout`',
  },
  maxConnections: {
    flag: 'max-connections',
    value: 'N',
    env: 'NBDMUX_MAX_CONNECTIONS',
    schema: wholeNumber('max-connections', 1, 65536).default(256),
    default: '256',
    help: 'live NBD connections at most; more are closed at once',
  },
  nbdMaxPendingPerClient: {
    flag: 'nbd-max-pending-per-client',
    value: 'N',
    env: 'NBDMUX_NBD_MAX_PENDING_PER_CLIENT',
    schema: z.coerce
      .number()
      .int('--nbd-max-pending-per-client must be a whole number')
      .min(1, '--nbd-max-pending-per-client must be at least 1')
      .optional(),
    default: '8 (at most `--max-connections`)',
    help: 'connections of one address that have not chosen an export yet, at most; below --max-connections',
    doc: 'live connections of one client address that have not chosen an export yet; more from that address are closed at once. Must be below `--max-connections`',
  },
  nbdNegotiationTimeout: {
    flag: 'nbd-negotiation-timeout',
    value: 'S',
    env: 'NBDMUX_NBD_NEGOTIATION_TIMEOUT',
    schema: wholeNumber('nbd-negotiation-timeout', 1, 3600, seconds).default(10),
    default: '10',
    help: 'seconds a connection has, from accept, to choose an export; then it is cut',
  },
  nbdWarmPool: {
    flag: 'nbd-warm-pool',
    value: 'N',
    env: 'NBDMUX_NBD_WARM_POOL',
    schema: wholeNumber('nbd-warm-pool', 0, 256).default(0),
    default: '0',
    help: 'nbd-server processes started ahead of demand; 0 starts one per client after accept',
    doc: 'nbd-server processes started ahead of demand and waiting, past exec and linking, to be handed a client (its socket, images and config) on accept; refilled only while no client is queued, starting or being handed over, within `--max-connections`. Needs fast start; 0 starts one per client after accept. 4 brings a handshake within 1.5x of a bare nbd-server (see docs/performance.md)',
  },
  nbdAllow: {
    flag: 'nbd-allow',
    value: 'CIDR',
    env: 'NBDMUX_NBD_ALLOW',
    list: ',',
    schema: z
      .array(
        z.string().refine((cidr) => parseCidr(cidr) !== null, {
          error: (issue) => `--nbd-allow: not an IP address or CIDR range: ${String(issue.input)}`,
        }),
      )
      .default([]),
    default: 'everyone',
    help: 'only these client addresses may use the NBD port',
  },
  allowedHosts: {
    flag: 'allowed-host',
    value: 'NAME',
    env: 'NBDMUX_ALLOWED_HOSTS',
    list: ',',
    schema: z
      .array(
        z.string().refine((name) => canonicalHostName(name) !== null, {
          error: (issue) => `--allowed-host: not a host name or IP address: ${String(issue.input)}`,
        }),
      )
      .default([]),
    default: 'none',
    help: 'another name HTTP clients may reach the daemon by, besides localhost and the bind address',
    doc: 'another name HTTP clients may reach the daemon by, besides localhost and the bind address (see [HTTP limits](../security.md#http-limits))',
  },
  maxHttpConnections: {
    flag: 'max-http-connections',
    value: 'N',
    env: 'NBDMUX_MAX_HTTP_CONNECTIONS',
    schema: wholeNumber('max-http-connections', 1, 65536).default(1024),
    default: '1024',
    help: 'open HTTP connections at most (lowered to fit the open-files limit)',
  },
  maxHttpPerClient: {
    flag: 'max-http-per-client',
    value: 'N',
    env: 'NBDMUX_MAX_HTTP_PER_CLIENT',
    schema: wholeNumber('max-http-per-client', 1, 65536).default(64),
    default: '64',
    help: 'open HTTP connections per client address',
  },
  httpRequestTimeout: {
    flag: 'http-request-timeout',
    value: 'S',
    env: 'NBDMUX_HTTP_REQUEST_TIMEOUT',
    schema: wholeNumber('http-request-timeout', 1, 3600, seconds).default(10),
    default: '10',
    help: "seconds a client has to send a request's headers and body",
  },
  maxWebSockets: {
    flag: 'max-websockets',
    value: 'N',
    env: 'NBDMUX_MAX_WEBSOCKETS',
    schema: wholeNumber('max-websockets', 1, 65536).default(256),
    default: '256',
    help: 'open WebSockets (live subscriptions) at most; more are closed at once with 1013',
  },
  maxWebSocketsPerClient: {
    flag: 'max-websockets-per-client',
    value: 'N',
    env: 'NBDMUX_MAX_WEBSOCKETS_PER_CLIENT',
    schema: wholeNumber('max-websockets-per-client', 1, 65536).default(32),
    default: '32',
    help: 'open WebSockets per client address',
  },
  adminPassword: {
    env: 'NBDMUX_ADMIN_PASSWORD',
    schema: z.string().min(1, 'NBDMUX_ADMIN_PASSWORD must not be empty (unset it to disable authentication)').optional(),
    default: 'unset',
    help: 'when set, every control-plane request must authenticate',
    doc: 'require authentication on the control plane (see [authentication](../security.md#authentication))',
  },
  sessionSecret: {
    env: 'NBDMUX_SESSION_SECRET',
    schema: z.string().min(32, 'NBDMUX_SESSION_SECRET must be at least 32 characters').optional(),
    default: 'generated',
    help: 'signs session cookies (default: generated once into DATA_DIR/session-secret)',
    doc: 'signs session cookies (at least 32 characters); generated once into `DATA_DIR/session-secret` when unset',
  },
  retainDays: {
    flag: 'retain-days',
    value: 'N',
    env: 'NBDMUX_RETAIN_DAYS',
    schema: wholeNumber('retain-days', 1, 36500, ['day', 'days']).default(30),
    default: '30',
    help: 'closed connections and events older than N days are deleted',
    doc: 'closed connections and events older than this are deleted (see [history retention](../exports.md#history-retention))',
  },
  keepVersions: {
    flag: 'keep-versions',
    value: 'N',
    env: 'NBDMUX_KEEP_VERSIONS',
    schema: wholeNumber('keep-versions', 1, 65536).default(3),
    default: '3',
    help: "imported images of each export's newest N versions are kept for rollback",
    doc: "imported images of each export's newest N versions are kept for rollback (see [versions](../images.md#versions))",
  },
  nbdPublicPort: {
    flag: 'nbd-public-port',
    value: 'N',
    env: 'NBDMUX_NBD_PUBLIC_PORT',
    schema: port('nbd-public-port').min(1, '--nbd-public-port must be a port number from 1 to 65535').optional(),
    default: '`--nbd-port`',
    help: 'the NBD port booting machines dial, when a port forward or NAT changes it',
    doc: 'the NBD port booting machines dial (in `nbdroot=` of the boot scripts), when a port forward or NAT changes it',
  },
  rambootKit: {
    flag: 'ramboot-kit',
    value: 'DIR',
    env: 'NBDMUX_RAMBOOT_KIT',
    schema: nonEmpty('ramboot-kit').optional(),
    default: 'none',
    help: 'the ramboot kit (vmlinuz, initrd.img, kit.env) that boots exports over HTTP (see ramboot/build-kit)',
    doc: "the ramboot kit (`vmlinuz`, `initrd.img`, `kit.env`): its initramfs starts every booted machine (with each image's own kernel and modules when it has them), its kernel boots the images that have none; start-up refuses a directory that is not a kit (see [the kit](../netboot.md#the-kit))",
  },
  bootDefault: {
    flag: 'boot-default',
    value: 'NAME',
    env: 'NBDMUX_BOOT_DEFAULT',
    schema: z
      .string()
      .regex(exportNamePattern, { error: (issue) => `--boot-default: not an export name: ${String(issue.input)}` })
      .optional(),
    default: 'none',
    help: "the export /boot.ipxe's menu boots unless someone chooses another",
    doc: "the export `/boot.ipxe`'s menu boots when nobody chooses; without it (or when it cannot boot) the menu waits for a choice",
  },
  bootMenuTimeout: {
    flag: 'boot-menu-timeout',
    value: 'S',
    env: 'NBDMUX_BOOT_MENU_TIMEOUT',
    schema: wholeNumber('boot-menu-timeout', 0, 3600, seconds).default(10),
    default: '10',
    help: 'seconds the menu waits before booting the default; 0 boots it with no menu',
    doc: 'seconds the menu waits before booting `--boot-default`; 0 boots it at once, with no menu',
  },
  logLevel: {
    flag: 'log-level',
    value: 'L',
    env: 'NBDMUX_LOG_LEVEL',
    schema: z.enum(logLevels, { error: `--log-level must be one of ${logLevels.join(', ')}` }).default('info'),
    default: 'info',
    help: `${logLevels.join(', ')}`,
    doc: logLevels.map((level) => `\`${level}\``).join(', '),
  },
} satisfies Record<string, OptionSpec>;
