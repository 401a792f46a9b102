import type { NbdmuxMachine } from '../../src/client.js';
import { el } from './format.js';

/** The pages, each with a URL of its own that can be shared: `#/`, `#/machines/MAC`, `#/exports/NAME`. */
export type Route = { page: 'overview' } | { page: 'machine'; mac: string } | { page: 'export'; name: string };

export function routeOf(hash: string): Route {
  const [, kind, key] = /^#\/(machines|exports)\/(.+)$/.exec(hash) ?? [];
  if (kind === undefined || key === undefined) return { page: 'overview' };
  let decoded: string;
  try {
    decoded = decodeURIComponent(key);
  } catch {
    return { page: 'overview' };
  }
  return kind === 'machines' ? { page: 'machine', mac: decoded.toLowerCase() } : { page: 'export', name: decoded };
}

export const machineHref = (mac: string) => `#/machines/${mac}`;
export const exportHref = (name: string) => `#/exports/${encodeURIComponent(name)}`;

export function machineLink(m: Pick<NbdmuxMachine, 'mac' | 'name'>): HTMLAnchorElement {
  return el('a', { text: m.name, attrs: { href: machineHref(m.mac) } });
}

export function exportLink(name: string): HTMLAnchorElement {
  return el('a', { text: name, attrs: { href: exportHref(name) } });
}
