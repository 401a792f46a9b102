/** Items counted together: when the first came, and how many followed it. */
interface Interval<T> {
  first: T;
  startedAt: number;
  /** Items after the first, not recorded yet. */
  more: number;
}

/** How many more of a kind came `since` its first, recorded when the kind's interval ends. */
export interface Repeats<T> {
  first: T;
  count: number;
  since: string;
  /** Items of kinds beyond `maxKinds`, counted together; `first` is the first of them. */
  overflow: boolean;
}

export interface IntervalSummaryOptions<T> {
  /** Items with the same kind are counted together. */
  kindOf: (item: T) => string;
  /** The first item of a kind in its interval: news, recorded at once. */
  recordFirst: (item: T) => void;
  recordRepeats: (repeats: Repeats<T>) => void;
  intervalMs: number;
  /** Kinds counted one by one; items of any further kind share one count. */
  maxKinds: number;
  now?: () => number;
}

const overflowKind = Symbol('overflow');

/**
 * Counts what keeps happening instead of recording each occurrence: the first of a kind is
 * recorded at once, the rest of its interval as one record with their count, so a cause that
 * repeats per connection (a hammering client, an nbd-server that fails every start) costs a few
 * rows an interval, not one per connection for ever. The counts add up to the items.
 */
export class IntervalSummary<T> {
  private readonly intervals = new Map<string | typeof overflowKind, Interval<T>>();
  private readonly now: () => number;

  constructor(private readonly options: IntervalSummaryOptions<T>) {
    this.now = options.now ?? Date.now;
  }

  /** Counts one item; true when it was the first of its kind in its interval, and so recorded at once. */
  add(item: T): boolean {
    const kind = this.options.kindOf(item);
    const open = this.intervals.get(kind);
    if (open) {
      open.more++;
      return false;
    }
    if (this.intervals.size >= this.options.maxKinds) {
      const others = this.intervals.get(overflowKind);
      if (others) others.more++;
      else this.intervals.set(overflowKind, { first: item, startedAt: this.now(), more: 1 });
      return false;
    }
    this.intervals.set(kind, { first: item, startedAt: this.now(), more: 0 });
    this.options.recordFirst(item);
    return true;
  }

  /** Records the count of every interval that has ended; the next item of that kind is news again. */
  sweep(): void {
    const now = this.now();
    for (const [kind, interval] of this.intervals) {
      if (now - interval.startedAt >= this.options.intervalMs) this.close(kind, interval);
    }
  }

  /** Records every count still open (at shutdown, or when the cause is gone), so none is lost. */
  flush(): void {
    for (const [kind, interval] of this.intervals) this.close(kind, interval);
  }

  private close(kind: string | typeof overflowKind, { first, startedAt, more }: Interval<T>): void {
    this.intervals.delete(kind);
    if (more === 0) return;
    this.options.recordRepeats({ first, count: more, since: new Date(startedAt).toISOString(), overflow: kind === overflowKind });
  }
}
