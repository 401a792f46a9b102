import type { NbdmuxVersion } from '../../src/client.js';
import { formatBytes } from '../../src/units.js';
import { el, formatTime } from './format.js';

/** One export's versions, newest first, each with the live connections it still serves and, when it can serve again, a rollback button. */
export function renderVersions(
  target: HTMLElement,
  name: string,
  versions: NbdmuxVersion[],
  rollback: (name: string, version: number) => void,
): void {
  target.replaceChildren(
    ...versions.map((v) => {
      const canServe = !v.current && v.state === 'ready';
      const button = el('button', { text: 'Roll back', className: 'small', title: `Serve version ${v.version} to new clients again` });
      button.addEventListener('click', () => rollback(name, v.version));
      return el('tr', { className: v.current ? 'current' : '', attrs: { 'data-version': String(v.version) } }, [
        el('td', { text: `${v.version}${v.current ? ' (current)' : ''}`, className: 'num' }),
        el('td', {}, [el('span', { text: v.state, className: `state ${v.state}` })]),
        el('td', { text: v.size === null ? '—' : formatBytes(v.size), className: 'num' }),
        el('td', { text: String(v.connections), className: 'num connections', title: 'live connections still reading this version' }),
        el('td', { text: formatTime(v.createdAt), title: v.createdAt }),
        el('td', { className: 'file' }, [
          el('span', { text: v.url ?? v.file ?? '—' }),
          ...(v.error ? [el('small', { text: v.error, className: 'file-changed' })] : []),
        ]),
        el('td', {}, canServe ? [button] : []),
      ]);
    }),
  );
}
