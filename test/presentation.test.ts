import { describe, expect, it } from 'vitest';
import { clientEndpoint, describeMode, explainMode, exportMode } from '../src/presentation.js';
import { formatBytes, formatDuration, formatRate } from '../src/units.js';

// The words the CLI and the dashboard both show; their end-to-end tests check them in place.
describe('shared presentation', () => {
  it.each([
    [{ readonly: true, cow: false }, 'ro', 'read-only', 'read-only'],
    [{ readonly: false, cow: false }, 'rw', 'read-write', 'read-write (clients write the image)'],
    [{ readonly: true, cow: true }, 'cow', 'copy-on-write', 'copy-on-write (each client writes its own discarded copy)'],
  ])('names the mode of %o: %s, %s, %s', (exp, short, word, explained) => {
    expect(exportMode(exp)).toBe(short);
    expect(describeMode(exp)).toBe(word);
    expect(explainMode(exp)).toBe(explained);
  });

  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [3 * 1024 * 1024, '3.0 MiB'],
    [1.5 * 1024 ** 3, '1.5 GiB'],
    [20 * 1024 ** 4, '20.0 TiB'],
    [2048 * 1024 ** 5, '2048.0 PiB'],
  ])('formats %d bytes as %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it('formats a rate, idle when nothing moves', () => {
    expect(formatRate(0)).toBe('idle');
    expect(formatRate(1536)).toBe('1.5 KiB/s');
  });

  it.each([
    ['2026-11-25T08:00:00.000Z', '2026-11-25T08:00:42.400Z', '42s'],
    ['2026-11-25T08:00:00.000Z', '2026-11-25T08:03:07.000Z', '3m07s'],
    ['2026-11-25T08:00:00.000Z', '2026-11-25T10:05:59.000Z', '2h05m'],
    ['2026-11-25T08:00:00.000Z', '2026-11-28T12:00:00.000Z', '3d04h'],
    // Clocks disagree a little between processes: never a negative duration.
    ['2026-11-25T08:00:01.000Z', '2026-11-25T08:00:00.000Z', '0s'],
  ])('formats %s to %s as %s', (from, to, text) => {
    expect(formatDuration(from, to)).toBe(text);
  });

  it('measures an open duration to now', () => {
    expect(formatDuration('2026-11-25T08:00:00.000Z', null, Date.parse('2026-11-25T08:01:05.000Z'))).toBe('1m05s');
  });

  it('shows where a connection comes from', () => {
    expect(clientEndpoint({ clientAddress: '10.1.2.3', clientPort: 40112 })).toBe('10.1.2.3:40112');
  });
});
