import type { Remedy } from '../remedy.js';
import type { CommandName } from './command-table.js';

/**
 * Every remedy in the CLI's words: the commands that do it, each quoted unless `quoted` is false
 * (a machine's boot console shows no quotes). The daemon's boot console words them so too.
 */
export function cliRemedy(remedy: Remedy, quoted = true): string {
  /** A command as the operator types it, its name checked against the CLI's own table. */
  const command = (name: CommandName, ...args: string[]) => {
    const text = ['nbdmux', name.endsWith(' list') ? name.slice(0, -' list'.length) : name, ...args].join(' ');
    return quoted ? `"${text}"` : text;
  };
  switch (remedy.kind) {
    case 'list-machines':
      return `${command('machines list')} lists them, and unknown MACs that asked to boot are under ${command('machines discovered')}`;
    case 'list-exports':
      return `${command('ls')} lists them`;
    case 'force-remove':
      return `${command('rm', '--force', remedy.name)} cuts them`;
    case 'list-versions':
      return `${command('versions', remedy.name)} lists its versions`;
    case 'edit-machine':
      return `change it with ${command('machines set', remedy.mac)} and what to change (--name, --export, --cmdline, ...)`;
    case 'make-persistent':
      return `${command('machines set', remedy.mac, '--persistent')} gives it one`;
    case 'set-machine-export':
      return `give it one with ${command('machines set', remedy.mac, '--export', 'EXPORT')}`;
    case 'show-machine':
      return `see ${command('machines show', remedy.mac)}`;
    case 'list-profiles':
      return `${command('profiles list')} lists them`;
    case 'leave-profile':
      return `take each out of it with ${remedy.macs.map((mac) => command('machines set', mac, '--no-profile')).join(', ')}`;
  }
}
