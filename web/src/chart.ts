import { formatRate } from '../../src/units.js';
import { el } from './format.js';

/** How far back the charts look. */
const windowMs = 5 * 60_000;

interface Sample {
  at: number;
  bytesPerSecond: number;
}

/**
 * The bytes per second of each export and each machine over the last minutes, from the status
 * snapshots the page receives anyway (one a second while bytes move): nothing more is asked of
 * the daemon, and a page opened later starts with an empty chart.
 */
export class Throughput {
  private readonly series = new Map<string, Sample[]>();

  /** One snapshot's rates by key (`export:NAME`, `machine:MAC`); a key with none gets a zero, so its line falls. */
  record(rates: ReadonlyMap<string, number>, at = Date.now()): void {
    for (const key of new Set([...this.series.keys(), ...rates.keys()])) {
      const samples = this.series.get(key) ?? [];
      samples.push({ at, bytesPerSecond: rates.get(key) ?? 0 });
      while (samples.length > 0 && samples[0]!.at < at - windowMs) samples.shift();
      if (samples.every((s) => s.bytesPerSecond === 0) && !rates.has(key)) this.series.delete(key);
      else this.series.set(key, samples);
    }
  }

  samples(key: string): readonly Sample[] {
    return this.series.get(key) ?? [];
  }
}

const svgNs = 'http://www.w3.org/2000/svg';
const width = 300;
const height = 60;

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string>): SVGElementTagNameMap[K] {
  const node = document.createElementNS(svgNs, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

/** A line of the last five minutes with its peak and latest rate in words beside it (the words are what a screen reader gets). */
export function throughputChart(samples: readonly Sample[], now = Date.now()): HTMLElement {
  const peak = Math.max(0, ...samples.map((s) => s.bytesPerSecond));
  const latest = samples.at(-1)?.bytesPerSecond ?? 0;
  const summary =
    samples.length === 0
      ? 'No bytes sent since this page opened.'
      : `Now ${formatRate(latest)}, peak ${formatRate(peak)} over the last ${Math.max(1, Math.round((now - samples[0]!.at) / 60_000))} min.`;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', 'aria-hidden': 'true', preserveAspectRatio: 'none' });
  chart.append(svg('line', { x1: '0', y1: String(height - 0.5), x2: String(width), y2: String(height - 0.5), class: 'axis' }));
  if (samples.length > 0) {
    const x = (at: number) => (width * (at - (now - windowMs))) / windowMs;
    const y = (rate: number) => (peak === 0 ? height - 1 : height - 1 - ((height - 4) * rate) / peak);
    const points = samples.map((s) => `${x(s.at).toFixed(1)},${y(s.bytesPerSecond).toFixed(1)}`);
    const first = x(samples[0]!.at).toFixed(1);
    const last = x(samples.at(-1)!.at).toFixed(1);
    chart.append(
      svg('polygon', { points: `${first},${height} ${points.join(' ')} ${last},${height}`, class: 'area' }),
      svg('polyline', { points: points.join(' '), class: 'line' }),
    );
  }
  return el('figure', { className: 'throughput' }, [chart, el('figcaption', {}, keepUnits(summary))]);
}

const amountWithUnit = /\d+(?:\.\d+)? (?:B|KiB|MiB|GiB|TiB|PiB)(?:\/s)?/g;

/** Text whose amounts ("1.1 MiB/s") never break between number and unit, while the words around them wrap. */
export function keepUnits(text: string): Array<Node | string> {
  const parts: Array<Node | string> = [];
  let last = 0;
  for (const match of text.matchAll(amountWithUnit)) {
    parts.push(text.slice(last, match.index), el('span', { text: match[0], className: 'amount' }));
    last = match.index + match[0].length;
  }
  parts.push(text.slice(last));
  return parts.filter((part) => part !== '');
}
