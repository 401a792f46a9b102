import { describe, expect, it } from 'vitest';
import { displayText, exportScript, httpBase, machineReconnectSeconds, menuScript } from '../src/boot/ipxe.js';
import { cmdlineProblem, defaultCmdline, maxCmdlineLength } from '../src/rules/cmdline.js';
import { describeBoot } from '../src/presentation.js';

const at = { httpBase: 'http://10.0.2.100', nbdHost: '10.0.2.100', nbdPort: 10809 };

describe('iPXE scripts', () => {
  it('boots an export: its kernel and initramfs from nbdmux, nbdroot at the NBD address and its root partition, then its own arguments', () => {
    expect(exportScript({ name: 'debian-12', version: 3, cmdline: defaultCmdline, partition: 2, cow: false }, at)).toBe(
      [
        '#!ipxe',
        'echo nbdmux: booting debian-12',
        'kernel http://10.0.2.100/boot/debian-12/vmlinuz?busid=${netX/busid} initrd=initrd.img nbdroot=10.0.2.100:10809/debian-12 nbdroot.part=2 console=tty0 console=ttyS0,115200',
        'initrd http://10.0.2.100/boot/debian-12/initrd.img?busid=${netX/busid}',
        'boot',
        '',
      ].join('\n'),
    );
  });

  it('leaves no trailing space when the export has no kernel arguments and no known partition', () => {
    expect(exportScript({ name: 'a', version: 3, cmdline: '', partition: null, cow: false }, at)).toContain('nbdroot=10.0.2.100:10809/a\n');
  });

  it("names a known machine in its kernel's and initrd's URLs, so that their stages land on it", () => {
    const machine = { name: 'node1', mac: '52:54:00:00:00:01', machineId: 'a'.repeat(32), cmdline: '', stateExport: null };
    const script = exportScript({ name: 'a', version: 3, cmdline: '', partition: null, cow: false }, at, machine).split('\n');
    expect(script.find((line) => line.startsWith('kernel '))).toMatch(
      /^kernel http:\/\/10\.0\.2\.100\/boot\/a\/vmlinuz\?mac=52:54:00:00:00:01&busid=\$\{netX\/busid\} initrd=initrd\.img /,
    );
    expect(script).toContain('initrd http://10.0.2.100/boot/a/initrd.img?mac=52:54:00:00:00:01&busid=${netX/busid}');
  });

  it('names the version a known machine boots as its root, and the plain export for a menu boot', () => {
    const machine = { name: 'node1', mac: '52:54:00:00:00:01', machineId: 'a'.repeat(32), cmdline: '', stateExport: null };
    const exp = { name: 'a', version: 3, cmdline: '', partition: null, cow: false };
    expect(exportScript(exp, at, machine)).toContain(' nbdroot=10.0.2.100:10809/a@v3 ');
    expect(exportScript(exp, at)).toContain(' nbdroot=10.0.2.100:10809/a\n');
  });

  it("tells a known machine's initramfs to reconnect, unless its export is copy-on-write (its writes go with the connection)", () => {
    const machine = { name: 'node1', mac: '52:54:00:00:00:01', machineId: 'a'.repeat(32), cmdline: '', stateExport: null };
    const reconnect = `nbdroot.reconnect=${machineReconnectSeconds} `;
    expect(exportScript({ name: 'a', version: 3, cmdline: '', partition: null, cow: false }, at, machine)).toContain(reconnect);
    expect(exportScript({ name: 'a', version: 3, cmdline: '', partition: null, cow: true }, at, machine)).not.toContain(
      'nbdroot.reconnect',
    );
    // A menu boot is no machine: nothing pins its version, so a reconnect could switch its root.
    expect(exportScript({ name: 'a', version: 3, cmdline: '', partition: null, cow: false }, at)).not.toContain('nbdroot.reconnect');
  });

  it.each([
    ['10.0.2.100', null, 'http://10.0.2.100'],
    ['nbdmux.lab', 4040, 'http://nbdmux.lab:4040'],
    ['::1', 4040, 'http://[::1]:4040'],
  ])('builds the HTTP base from host %s and port %s', (host, port, base) => {
    expect(httpBase(host, port)).toBe(base);
  });

  it('offers a menu that boots the default after the timeout and chains the chosen export', () => {
    const menu = menuScript(
      [
        { name: 'alpha', description: 'Debian GNU/Linux 12 (bookworm)' },
        { name: 'beta', description: null },
      ],
      { httpBase: 'http://nbdmux:4040', defaultName: 'beta', timeoutMs: 10_000 },
    );
    expect(menu).toBe(
      [
        '#!ipxe',
        'menu nbdmux: choose an export to boot',
        'item alpha alpha - Debian GNU/Linux 12 (bookworm)',
        'item beta beta',
        'choose --default beta --timeout 10000 target || exit 1',
        'chain http://nbdmux:4040/boot/${target}.ipxe',
        '',
      ].join('\n'),
    );
  });

  it('boots nothing by itself when the default is not among the exports offered', () => {
    const menu = menuScript([{ name: 'alpha', description: null }], { httpBase: 'http://h', defaultName: 'gone', timeoutMs: 5000 });
    expect(menu).toContain('\nchoose target || exit 1\n');
    expect(menu).toContain('item --gap (the default, gone, is not available to boot: choose)');
    expect(menuScript([{ name: 'alpha', description: null }], { httpBase: 'http://h', defaultName: null, timeoutMs: 5000 })).not.toContain(
      '--default',
    );
  });

  it('boots the default at once, with no menu, when the timeout is 0 (iPXE would wait for ever)', () => {
    const entries = [{ name: 'alpha', description: null }];
    expect(menuScript(entries, { httpBase: 'http://h', defaultName: 'alpha', timeoutMs: 0 })).toBe(
      '#!ipxe\nchain http://h/boot/alpha.ipxe\n',
    );
    expect(menuScript(entries, { httpBase: 'http://h', defaultName: null, timeoutMs: 0 })).toContain('\nchoose target || exit 1\n');
  });

  it('says so, and gives up, when no export is ready', () => {
    expect(menuScript([], { httpBase: 'http://h', defaultName: 'alpha', timeoutMs: 5000 })).toMatch(
      /^#!ipxe\necho nbdmux: no export is ready to boot.*\nexit 1\n$/,
    );
  });

  // An image's os-release is written by whoever built the image.
  it.each([
    ['Debian ${net0/mac} \\', 'Debian ??net0/mac? ?'],
    ['x\nchain http://evil/', 'x?chain http://evil/'],
    ['a # b ; c && d || e', 'a ? b ? c ?? d ?? e'],
    ['"quoted" \'too\'', '?quoted? ?too?'],
    ['Ubuntu\t24.04\u00a0LTS', 'Ubuntu?24.04?LTS'],
  ])('shows image text %j in a menu as %j', (os, shown) => {
    expect(displayText(os)).toBe(shown);
    const menu = menuScript([{ name: 'img', description: os }], { httpBase: 'http://h', defaultName: null, timeoutMs: 0 });
    expect(menu.split('\n')).toHaveLength(6);
    expect(menu).toContain(`item img img - ${shown}\n`);
  });

  it('bounds image text', () => {
    expect(displayText('x'.repeat(10_000))).toHaveLength(60);
  });
});

describe('kernel arguments (cmdline)', () => {
  it.each([
    ['a newline', 'quiet\nchain http://evil/x', /no newline/],
    ['a carriage return', 'quiet\r', /no newline/],
    ['a tab', 'quiet\tsplash', /control character/],
    ['a NUL', 'quiet\0', /control character/],
    ['non-ASCII', 'quiet\u00e9', /printable ASCII/],
    ['an iPXE setting', 'hostname=${net0/mac}', /'\$'.*\$\{net0\/mac\}/],
    ['a bare dollar', 'x=$y', /'\$'/],
    ['a line continuation', 'quiet \\', /'\\'/],
    ['a comment', 'quiet #', /'#'/],
    ['a comment inside a word', 'a#b', /'#'/],
    ['a command separator', 'quiet ; shell', /';'/],
    ['an AND', 'quiet && chain http://evil/', /'&'/],
    ['an OR', 'quiet || shell', /'\|'/],
    ['double quotes', 'x="a b"', /quotes/],
    ['single quotes', "x='a'", /quotes/],
    ['a backtick', 'x=`id`', /quotes/],
    ['nbdroot', 'nbdroot=10.9.9.9:10809/other', /must not set nbdroot=/],
    ['initrd', 'quiet initrd=evil.img', /must not set initrd=/],
    ['too many characters', 'x'.repeat(maxCmdlineLength + 1), /at most 1024/],
  ])('refuses %s', (_what, cmdline, problem) => {
    expect(cmdlineProblem(cmdline)).toMatch(problem);
  });

  it.each([
    '',
    defaultCmdline,
    'quiet net.ifnames=0 nbdroot.part=2 nbdroot.overlay=2G nbdroot.timeout=60 root=/dev/nbd0p2 ip=10.1.0.9::10.1.0.1:255.255.0.0:lab:ens2:none systemd.unit=multi-user.target',
    'x'.repeat(maxCmdlineLength),
  ])('accepts %j', (cmdline) => {
    expect(cmdlineProblem(cmdline)).toBeNull();
  });
});

describe('boot status in words', () => {
  const none = { os: null, kernel: null, partition: null, fstype: null, layout: null, lv: null, subvol: null };
  it.each([
    [{ ...none, ready: false, reason: 'no kit' }, 'not ready (no kit)'],
    [
      { ...none, ready: true, kernel: '6.1.0-57-amd64', reason: "boots the ramboot kit's kernel" },
      "ready: kernel 6.1.0-57-amd64 (boots the ramboot kit's kernel)",
    ],
    [
      { ...none, ready: true, os: 'Debian GNU/Linux 12 (bookworm)', kernel: '6.1.0-50-amd64', partition: 2, fstype: 'ext4', reason: null },
      'ready: Debian GNU/Linux 12 (bookworm), kernel 6.1.0-50-amd64, partition 2 (ext4)',
    ],
    [{ ...none, ready: true, fstype: 'ext4', reason: null }, 'ready: ext4'],
  ])('%j reads %j', (boot, words) => {
    expect(describeBoot({ boot })).toBe(words);
  });
});
