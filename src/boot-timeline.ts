/**
 * A machine's boots as the dashboard shows them: its current boot's stages from `machines.get`,
 * its past boots from the event log, each stage with the time it took. Bundled into the page,
 * so nothing Node-only is imported (types from the client are erased).
 */
import type { NbdmuxEvent, NbdmuxMachine } from './client.js';
import { formatDuration } from './units.js';

export interface TimelineStep {
  stage: string;
  at: string;
}

/** The stages of a machine's current boot in the order reached, as `machines.get` returns them in `timeline`. */
export function timelineOf(m: Pick<NbdmuxMachine, 'timeline'>): TimelineStep[] {
  return Object.entries(m.timeline)
    .map(([stage, at]) => ({ stage, at }))
    .sort((a, b) => a.at.localeCompare(b.at));
}

/** One boot as the event log tells it: the stages it reached, from its script on. */
export interface PastBoot {
  steps: TimelineStep[];
  detail: string | null;
}

/** The machine's boots in the events given (newest first), newest first: each begins with its script. */
export function bootsOf(mac: string, events: readonly NbdmuxEvent[]): PastBoot[] {
  const boots: PastBoot[] = [];
  for (const event of [...events].reverse()) {
    if (event.type !== 'machine.stage' || event.details.mac !== mac) continue;
    const step = { stage: event.details.stage, at: event.at };
    if (step.stage === 'script' || boots.length === 0) boots.push({ steps: [], detail: null });
    const boot = boots.at(-1)!;
    boot.steps.push(step);
    if (event.details.stage === 'failed') boot.detail = event.details.detail ?? null;
  }
  return boots.reverse();
}

/** `script → root (1s) → up (4s)`: each stage with the time it came after the one before. */
export function stagePath(steps: readonly TimelineStep[]): string {
  return steps.map((step, i) => (i === 0 ? step.stage : `${step.stage} (${formatDuration(steps[i - 1]!.at, step.at)})`)).join(' → ');
}
