import { defineConfig } from 'vitest/config';

/**
 * Three speeds: `unit` (pure and in-memory, no build: `npm run test:unit`), `daemon` (the built
 * bin with real nbd-server and NBD clients, and imports, which run the built nbdmux-sparse-write;
 * a stale dist/ is rebuilt first) and `e2e` (qemu guests and Chromium). `npm test` runs all three; `npm run test:long` the qemu boots kept out of CI's time. A test file not named below is a daemon test.
 */
const unit = [
  'bench-growth',
  'boot-inspect',
  'boot-routes-cost',
  'close-classification',
  'completion',
  'config-variants',
  'dashboard-pages',
  'connection-table',
  'docs-links',
  'event-map',
  'images-config',
  'images-detect',
  'import-progress',
  'ipxe',
  'machine-rules-hostile',
  'machines',
  'migrations',
  'nbd-config',
  'presentation',
  'profiles',
  'name-pattern',
  'nic-drivers',
  'reference-docs',
  'refusal-summary',
  'remedy',
  'registry',
  'report-pipe',
  'untrusted-text',
  'options',
  'images-min-rate',
  'retention',
  'router',
  'start-failures',
  'throttle',
  'version-registry',
].map((name) => `test/${name}.test.ts`);
const e2e = [
  'auth',
  'boot-initrd-qemu',
  'client-package',
  'dashboard-fleet',
  'dashboard-logout',
  'dashboard-machines',
  'dashboard-power',
  'dashboard-versions',
  'dashboard',
  'event-dashboard',
  'layout-boot',
  'machines-boot',
  'netboot',
  'nic-names',
  'pxe-chain',
  'reconnect',
].map((name) => `test/${name}.test.ts`);
/**
 * qemu boots kept out of CI's 30 minutes, `npm run test:long`: the plain Debian boot and reboot
 * (machines-boot boots the same image), the cloud-init, NIC-driver and power-reimage boots, the
 * busybox PXE boot (pxe-chain covers its path), and the DHCP lease renewal and disk-lost bound
 * (reconnect keeps the outage a booted machine rides through in CI).
 */
const long = ['cloud-init-boot', 'debian-boot', 'lease', 'nic-kernel', 'power-reimage', 'pxe-boot'].map((name) => `test/${name}.test.ts`);

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 30_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
    projects: [
      { extends: true, test: { name: 'unit', include: unit } },
      {
        extends: true,
        test: {
          name: 'daemon',
          include: ['test/**/*.test.ts'],
          exclude: [...unit, ...e2e, ...long],
          globalSetup: ['test/global-build.ts'],
        },
      },
      { extends: true, test: { name: 'e2e', include: e2e, globalSetup: ['test/global-build.ts'] } },
      { extends: true, test: { name: 'long', include: long, globalSetup: ['test/global-build.ts'] } },
    ],
  },
});
