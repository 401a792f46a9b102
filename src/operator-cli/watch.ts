import type { NbdmuxClient, NbdmuxStreamEvent, NbdmuxStatus } from '../client.js';
import { cleanText } from '../untrusted-text.js';
import type { Invocation } from './args.js';
import type { Output } from './output.js';
import { exitCodes } from './failure.js';
import { columns, EventLines, eventTextColumn } from './event-lines.js';
import { formatClock } from './format.js';
import { renderConnections } from './views.js';

/** What watch shows; a terminal gets a screen redrawn in place, anything else a stream of lines. */
interface WatchView {
  event(event: NbdmuxStreamEvent): void;
  status(status: NbdmuxStatus): void;
  connection(up: boolean, reason?: string): void;
  close(): void;
}

const backlog = 20;

/**
 * Live events and connections until Ctrl-C (or SIGTERM), then exit 0. Both streams ride one
 * WebSocket that reconnects by itself; the event stream resumes after the last event shown, so
 * a daemon restart loses none.
 */
export async function watch(client: NbdmuxClient, { json, url }: Invocation, out: Output): Promise<number> {
  const recent = (await client.events.list.query({ limit: backlog })).reverse();
  const view: WatchView = json ? new JsonLines(out) : process.stdout.isTTY ? new Screen(url) : new Lines(out);
  for (const event of recent) view.event(event);

  return new Promise<number>((resolve, reject) => {
    const stop = (error?: Error) => {
      events.unsubscribe();
      status.unsubscribe();
      view.close();
      process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
      if (error === undefined) resolve(exitCodes.ok);
      else reject(error);
    };
    const onSignal = () => stop();
    process.on('SIGINT', onSignal).on('SIGTERM', onSignal);

    // Unknown until the first connection; the first attempt is not news, losing it later is.
    let up: boolean | undefined;
    const events = client.events.stream.subscribe(
      { lastEventId: String(recent.at(-1)?.id ?? 0) },
      {
        onData: ({ data }) => view.event(data),
        onError: stop,
        onConnectionStateChange: (state) => {
          if (state.state === 'idle') return;
          const nowUp = state.state === 'pending';
          if (nowUp === up || (up === undefined && !nowUp && !state.error)) return;
          up = nowUp;
          view.connection(nowUp, state.error?.message);
        },
      },
    );
    const status = client.status.stream.subscribe(undefined, { onData: (snapshot) => view.status(snapshot), onError: stop });
  });
}

class JsonLines implements WatchView {
  constructor(private readonly out: Output) {}
  event(event: NbdmuxStreamEvent) {
    this.out.write(`${JSON.stringify({ type: 'event', event })}\n`);
  }
  status(status: NbdmuxStatus) {
    this.out.write(`${JSON.stringify({ type: 'status', status })}\n`);
  }
  connection(up: boolean, reason?: string) {
    this.out.write(`${JSON.stringify({ type: 'connection', up, ...(reason && { reason }) })}\n`);
  }
  close() {}
}

/** One line per event, plus a status line whenever health or the number of live connections changes. */
class Lines implements WatchView {
  private readonly lines = new EventLines();
  private lastSummary = '';
  private lost = false;
  constructor(private readonly out: Output) {}
  event(event: NbdmuxStreamEvent) {
    const line = this.lines.render(event);
    if (line !== null) this.out.write(`${line}\n`);
  }
  status(status: NbdmuxStatus) {
    const summary = summarize(status);
    if (summary === this.lastSummary) return;
    this.lastSummary = summary;
    this.out.write(`${columns(new Date().toISOString(), 'status', null, summary)}\n`);
  }
  connection(up: boolean, reason?: string) {
    if (up === !this.lost) return;
    this.lost = !up;
    process.stderr.write(
      up
        ? 'nbdmux: connected again\n'
        : `nbdmux: lost the connection to the daemon${reason ? ` (${cleanText(reason)})` : ''}; reconnecting\n`,
    );
  }
  close() {}
}

/** The whole terminal, redrawn in place: status, live connections, then the newest events that fit. */
class Screen implements WatchView {
  private readonly lines = new EventLines();
  private events: string[] = [];
  private latest: NbdmuxStatus | undefined;
  private link = 'connecting';
  private pending: NodeJS.Timeout | undefined;

  constructor(private readonly url: string) {
    // The alternate screen leaves the shell's scrollback as it was; the cursor is hidden while drawing.
    process.stdout.write('\x1b[?1049h\x1b[?25l');
    process.stdout.on('resize', this.onResize);
  }
  private readonly onResize = () => this.redraw();

  event(event: NbdmuxStreamEvent) {
    const line = this.lines.render(event);
    if (line === null) return;
    this.events.push(line);
    if (this.events.length > 500) this.events.splice(0, this.events.length - 500);
    this.redraw();
  }
  status(status: NbdmuxStatus) {
    this.latest = status;
    this.link = 'live';
    this.redraw();
  }
  connection(up: boolean, reason?: string) {
    this.link = up ? 'live' : `reconnecting${reason ? ` (${reason})` : ''}`;
    this.redraw();
  }
  close() {
    clearTimeout(this.pending);
    process.stdout.off('resize', this.onResize);
    process.stdout.write('\x1b[?25h\x1b[?1049l');
  }

  /** At most one draw per 50 ms: a boot storm brings hundreds of events a second. */
  private redraw() {
    this.pending ??= setTimeout(() => {
      this.pending = undefined;
      this.draw();
    }, 50);
  }

  private draw() {
    const width = process.stdout.columns || 80;
    const height = process.stdout.rows || 24;
    // Straight to the terminal, so written out here: a control character in an event would act on the screen, and throw off the fitting.
    const fit = (line: string, indent: number) => wrapLine(cleanText(line), width, indent);
    const lines = [`nbdmux watch  ${this.url}  ${this.link}  ${formatClock(new Date().toISOString())}  (Ctrl-C quits)`].flatMap((l) =>
      fit(l, 2),
    );
    if (this.latest) {
      lines.push(...fit(summarize(this.latest), 2), '', 'LIVE CONNECTIONS');
      lines.push(
        ...renderConnections(this.latest.connections, true)
          .trimEnd()
          .split('\n')
          .flatMap((l) => fit(l, 2)),
      );
    }
    lines.push('', 'EVENTS');
    // The newest events whose every line fits: an error is shown whole or not at all, never cut.
    const room = Math.max(0, height - lines.length);
    const shown: string[] = [];
    for (let i = this.events.length - 1; i >= 0; i--) {
      const wrapped = fit(this.events[i]!, Math.min(eventTextColumn, Math.floor(width / 3)));
      if (shown.length + wrapped.length > room) break;
      shown.unshift(...wrapped);
    }
    lines.push(...shown);
    process.stdout.write(
      `\x1b[H${lines
        .slice(0, height)
        .map((line) => `${line}\x1b[K`)
        .join('\n')}\x1b[J`,
    );
  }
}

/** A line as lines of at most `width` characters, the further ones indented: the end of a line (an exit code, an error) is the part that matters. */
function wrapLine(line: string, width: number, indent: number): string[] {
  if (line.length <= width) return [line];
  const room = Math.max(1, width - indent);
  const out = [line.slice(0, width)];
  for (let at = width; at < line.length; at += room) out.push(' '.repeat(indent) + line.slice(at, at + room));
  return out;
}

function summarize(status: NbdmuxStatus): string {
  const draining = status.exports.filter((e) => e.state === 'draining').length;
  const health = status.health.ok ? 'ok' : `NOT OK: ${status.health.problems.join('; ')}`;
  return `health ${health}, ${status.exports.length} export(s)${draining ? ` (${draining} draining)` : ''}, ${status.connections.length} live connection(s)`;
}
