/**
 * Medians of repeated measurements: every figure a scenario prints is the median of its samples,
 * with their min-max and count (issue 19 asks for the median of >= 10 runs).
 */

export interface Summary {
  median: number;
  min: number;
  max: number;
  /** Number of samples. */
  n: number;
}

/** Median (mean of the two middle values for an even count), min, max and count; undefined when empty. */
export function summarize(samples: readonly number[]): Summary | undefined {
  const s = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

/** "2.43 [2.10-2.80]" (just "2.43" for a single sample, "-" for none). */
export function formatSummary(s: Summary | undefined, digits = 2): string {
  if (s === undefined) return "-";
  if (s.n === 1 || s.min === s.max) return s.median.toFixed(digits);
  return `${s.median.toFixed(digits)} [${s.min.toFixed(digits)}-${s.max.toFixed(digits)}]`;
}

/** Every top-level finite number of a result object, by field name (arrays and strings left out). */
export function numericFields(result: object): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(result)) {
    if (typeof value === "number" && Number.isFinite(value)) out[key] = value;
  }
  return out;
}

/** Per field, the summary of that field over all runs (fields missing from a run are skipped there). */
export function summarizeRuns(runs: readonly Record<string, number>[]): Record<string, Summary> {
  const samples = new Map<string, number[]>();
  for (const run of runs) {
    for (const [key, value] of Object.entries(run)) {
      const list = samples.get(key);
      if (list === undefined) samples.set(key, [value]);
      else list.push(value);
    }
  }
  const out: Record<string, Summary> = {};
  for (const [key, list] of samples) {
    const s = summarize(list);
    if (s !== undefined) out[key] = s;
  }
  return out;
}

/** Results of one case run `runs.length` times, with the median of each numeric figure. */
export interface Repeated<R> {
  runs: R[];
  summary: Record<string, Summary>;
}

/** Runs `once` `times` times in a row (sequentially) and summarizes the numeric fields of the results. */
export async function repeat<R extends object>(
  times: number,
  once: (index: number) => Promise<R>,
  fields: (r: R) => Record<string, number> = numericFields,
): Promise<Repeated<R>> {
  const runs: R[] = [];
  for (let i = 0; i < times; i++) runs.push(await once(i));
  return { runs, summary: summarizeRuns(runs.map(fields)) };
}
