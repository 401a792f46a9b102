import { describe, expect, it } from 'vitest';
import { globMatches, nicDrivers, parseBuiltinModinfo, parseBusId, parseModulesAlias } from '../src/inspect/nic-drivers.js';

const e1000 = { vendor: 0x8086, device: 0x100e };
const virtioNet = { vendor: 0x1af4, device: 0x1000 };

describe("iPXE's busid", () => {
  it('reads the bus type, vendor and device of ${netX/busid} (hex_encode, lower case)', () => {
    expect(parseBusId('01:80:86:10:0e')).toEqual({ ok: true, nic: e1000 });
    expect(parseBusId('01:1A:F4:10:00')).toEqual({ ok: true, nic: virtioNet });
  });

  it.each([
    ['', 'not five hex bytes'],
    ['01:80:86:10', 'not five hex bytes'],
    ['01:80:86:10:0e:00', 'not five hex bytes'],
    ['01-80-86-10-0e', 'not five hex bytes'],
    ['01:80:86:10:0g', 'not five hex bytes'],
    ['01:80:86:10:0e\n', 'not five hex bytes'],
    ['x'.repeat(10_000), 'not five hex bytes'],
  ])('refuses %j as malformed', (text, why) => {
    const parsed = parseBusId(text);
    expect(parsed).toMatchObject({ ok: false, wellFormed: false });
    expect(!parsed.ok && parsed.reason).toContain(why);
    expect(!parsed.ok && parsed.reason.length).toBeLessThan(200);
  });

  it('takes a NIC on another bus than PCI as well formed, and names no driver for it', () => {
    expect(parseBusId('07:80:86:10:0e')).toMatchObject({
      ok: false,
      wellFormed: true,
      reason: expect.stringContaining('bus type 7, not PCI'),
    });
  });
});

describe('glob matching (fnmatch as kmod uses it)', () => {
  it.each([
    ['pci:v00008086d0000100Esv*sd*bc*sc*i*', 'pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00', true],
    ['0000100?', '0000100E', true],
    ['0000100?', '0000100', false],
    ['00001[0-1]0E', '0000100E', true],
    ['00001[!0]0E', '0000100E', false],
    ['00001[^0]0E', '0000110E', true],
    ['*', '', true],
    ['', 'a', false],
    ['a*b*c', 'axxbyyc', true],
    ['a*b*c', 'axxbyy', false],
    ['[', '[', true],
    ['[abc', 'a', false],
    ['[]]', ']', true],
  ])('%j against %j: %s', (pattern, text, expected) => {
    expect(globMatches(pattern, text)).toBe(expected);
  });

  it('stays fast on a pattern of many stars that cannot match (no exponential backtracking)', () => {
    const started = performance.now();
    expect(globMatches(`${'*a'.repeat(100)}b`, 'a'.repeat(200))).toBe(false);
    expect(performance.now() - started).toBeLessThan(100);
  });
});

const debianAliases = [
  '# Aliases extracted from modules themselves.',
  'alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000',
  'alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e',
  'alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci',
  'alias virtio:d00000001v* virtio_net',
  'alias pci:v*d*sv*sd*bc02sc00i* some_class_driver',
  'alias fs-vfat vfat',
].join('\n');

describe("the driver of a machine's NIC, from the image's modules.alias", () => {
  const none = parseBuiltinModinfo(Buffer.alloc(0));

  it('finds the PCI driver by vendor and device', () => {
    expect(nicDrivers(e1000, parseModulesAlias(debianAliases), none)).toEqual({ ok: true, modules: ['e1000'], shown: 'e1000' });
    expect(nicDrivers({ vendor: 0x8086, device: 0x10d3 }, parseModulesAlias(debianAliases), none)).toMatchObject({ modules: ['e1000e'] });
  });

  it('adds virtio_net to virtio_pci for a virtio NIC, legacy or modern', () => {
    for (const device of [0x1000, 0x1041])
      expect(nicDrivers({ vendor: 0x1af4, device }, parseModulesAlias(debianAliases), none)).toEqual({
        ok: true,
        modules: ['virtio_pci', 'virtio_net'],
        shown: 'virtio_pci + virtio_net',
      });
  });

  it("says so when the kernel has no driver for the NIC (Debian's cloud kernel and an e1000)", () => {
    const cloud = parseModulesAlias(['alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci', 'alias virtio:d00000001v* virtio_net'].join('\n'));
    expect(nicDrivers(e1000, cloud, none)).toEqual({ ok: false, reason: 'no module of its kernel has a modules.alias for PCI 8086:100e' });
  });

  it('never takes a driver of another class for a NIC: ata_generic matches every Intel device of class 01 (storage)', () => {
    const cloud = parseModulesAlias(
      'alias pci:v00008086d*sv*sd*bc01sc01i* ata_generic\nalias pci:v000015B3d0000100Esv*sd*bc*sc*i* mlx4_core',
    );
    expect(nicDrivers(e1000, cloud, none)).toMatchObject({ ok: false });
    expect(nicDrivers(e1000, parseModulesAlias('alias pci:v00008086d*sv*sd*bc02sc00i* intel_nic'), none)).toMatchObject({
      modules: ['intel_nic'],
    });
  });

  it('never takes a driver whose alias matches every vendor for the NIC of its own', () => {
    const classOnly = parseModulesAlias('alias pci:v*d*sv*sd*bc02sc00i* some_class_driver');
    expect(nicDrivers(e1000, classOnly, none).ok).toBe(false);
  });

  it('counts a driver built into the kernel (modules.builtin.modinfo), loading nothing for it', () => {
    const builtin = parseBuiltinModinfo(
      Buffer.from(
        'virtio_pci.license=GPL\0virtio_pci.alias=pci:v00001AF4d*sv*sd*bc*sc*i*\0virtio_net.alias=virtio:d00000001v*\0',
        'latin1',
      ),
    );
    expect(nicDrivers(virtioNet, parseModulesAlias(''), builtin)).toEqual({
      ok: true,
      modules: [],
      shown: 'virtio_pci (built in) + virtio_net (built in)',
    });
  });

  it('wants virtio_net too: virtio_pci alone drives no NIC', () => {
    const pciOnly = parseModulesAlias('alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci');
    expect(nicDrivers(virtioNet, pciOnly, none)).toMatchObject({ ok: false, reason: expect.stringContaining('virtio-net alias') });
  });

  it('skips hostile lines and says so, and keeps reading the good ones', () => {
    const hostile = [
      'alias pci:v00008086d0000100Esv*sd*bc*sc*i* ../../etc/passwd',
      'alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000;reboot',
      `alias pci:v00008086d0000100E${'*'.repeat(300)} e1000`,
      'alias pci:v00008086d0000100E$(id)sv*sd*bc*sc*i* e1000',
      'alias pci:v00008086d0000100Esv*sd*bc*sc*i*',
      'options e1000 debug=16',
      '\0\0\0',
      'alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000',
    ].join('\n');
    const table = parseModulesAlias(hostile);
    expect(table.aliases).toEqual([{ pattern: 'pci:v00008086d0000100Esv*sd*bc*sc*i*', module: 'e1000' }]);
    expect(table.refused).toHaveLength(5);
    expect(table.refused[0]).toContain('not a module name');
    expect(table.refused[2]).toContain('longer than 200');
    expect(nicDrivers(e1000, table, parseBuiltinModinfo(Buffer.alloc(0)))).toMatchObject({ ok: true, modules: ['e1000'] });
  });

  it('names lines it skipped when no driver is found, bounded', () => {
    const table = parseModulesAlias(Array.from({ length: 50 }, (_, i) => `alias pci:v00008086d0000100Esv*sd*bc*sc*i* bad/${i}`).join('\n'));
    expect(table.refused).toHaveLength(5);
    const found = nicDrivers(e1000, table, parseBuiltinModinfo(Buffer.alloc(0)));
    expect(found).toMatchObject({ ok: false, reason: expect.stringContaining('lines skipped') });
    expect(!found.ok && found.reason.length).toBeLessThan(600);
  });

  it('reads only the first 200 000 lines of a modules.alias of millions', () => {
    const table = parseModulesAlias(`${'alias fs-x x\n'.repeat(250_000)}alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n`);
    expect(table.refused[0]).toContain('only the first 200000');
    expect(nicDrivers(e1000, table, parseBuiltinModinfo(Buffer.alloc(0))).ok).toBe(false);
  });
});
