/** One quantity sampled over a run: (seconds since the start, value) pairs. */
export interface Series {
  what: string;
  unit: string;
  points: Array<{ t: number; value: number }>;
}

export interface Growth {
  what: string;
  unit: string;
  /** Least-squares slope over the second half of the samples, per second. */
  slopePerSecond: number;
  /** What that slope adds over the second half's time span. */
  growth: number;
  /** The growth tolerated: the largest of the floor, the relative share of the median, and 3 standard deviations of the residuals. */
  allowed: number;
  median: number;
  bounded: boolean;
}

export interface GrowthLimit {
  /** Growth below this is never a leak (e.g. a few connections in flight when a sample is taken). */
  floor: number;
  /** Growth below this share of the median level is never a leak (e.g. a heap settling). */
  relative: number;
}

/**
 * Judges whether a quantity still grows once the run has warmed up: a straight line fitted by
 * least squares to the second half of the samples (the first half is start-up: heaps, caches and
 * pools filling). A leak shows as a slope whose growth across that half exceeds both the noise
 * around the line and a tolerance for the quantity; a bounded quantity fits a flat line.
 */
export function judgeGrowth(series: Series, limit: GrowthLimit): Growth {
  const half = series.points.slice(Math.floor(series.points.length / 2));
  if (half.length < 3) throw new Error(`${series.what}: ${half.length} samples in the second half, need at least 3 to fit a slope`);
  const n = half.length;
  const meanT = half.reduce((sum, p) => sum + p.t, 0) / n;
  const meanV = half.reduce((sum, p) => sum + p.value, 0) / n;
  const sxx = half.reduce((sum, p) => sum + (p.t - meanT) ** 2, 0);
  const sxy = half.reduce((sum, p) => sum + (p.t - meanT) * (p.value - meanV), 0);
  const slopePerSecond = sxx === 0 ? 0 : sxy / sxx;
  const residuals = half.map((p) => p.value - (meanV + slopePerSecond * (p.t - meanT)));
  const noise = Math.sqrt(residuals.reduce((sum, r) => sum + r * r, 0) / Math.max(1, n - 2));
  const sorted = half.map((p) => p.value).sort((a, b) => a - b);
  const median = sorted[n >> 1]!;
  const growth = slopePerSecond * (half.at(-1)!.t - half[0]!.t);
  const allowed = Math.max(limit.floor, limit.relative * median, 3 * noise);
  return { what: series.what, unit: series.unit, slopePerSecond, growth, allowed, median, bounded: growth <= allowed };
}
