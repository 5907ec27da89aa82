/**
 * The goals of issue 19, in one place, and what the scenarios of one bench run measured for them.
 * run.ts prints the goals table at the end of every run and puts it in the JSON output.
 *
 * Convention for scenarios (also for new ones):
 * - A scenario that measures a goal calls `recordGoal(id, samples, source, note?)` once per
 *   measured case, with the raw samples in the goal's unit (see `GOALS`: seconds, MB = 10^6
 *   bytes, cores, MiB, per second, ratio). The table shows their median, min-max and n, and
 *   "met" / "NOT met" by comparing the median with the target.
 * - `samples` are >= 10 runs of the case (`--repeat N`), or, for an expensive case run once,
 *   >= 10 samples from within that run (e.g. CPU over each 1 s of an idle window); say which
 *   in `note` (e.g. "1 s samples within 1 run"). n < 10 is shown as such, not hidden.
 * - `source` names the scenario and case, e.g. "relay 100 MB x 2, TLS + auth".
 * - Recording the same goal from two cases gives two rows (e.g. SuperLink RSS from relay and
 *   fedavg); a goal nobody recorded is shown as "not measured" with the scenario that measures it.
 * - To add a goal: add its id to `GoalId` and an entry to `GOALS`; nothing else changes.
 */
import { type Summary, formatSummary, summarize } from "./stats";

export type GoalId =
  | "relay-100x2-seconds"
  | "relay-100x10-seconds"
  | "serverapp-peak-rss-100x10-mb"
  | "superlink-peak-rss-100x10-mb"
  | "broadcast-driver-bytes-per-payload"
  | "registrations-per-second"
  | "idle-10000-superlink-cores"
  | "idle-10000-superlink-rss-mib"
  | "round-1000-nodes-seconds"
  | "example-fit-seconds";

export interface Goal {
  id: GoalId;
  /** What is measured, as the table prints it. */
  what: string;
  unit: string;
  /** How the median must compare with the target to meet the goal. */
  compare: "<=" | "<" | ">=";
  target: number;
  /** Digits the table prints. */
  digits: number;
  /** Which scenario (and options) measures it, for "not measured" rows. */
  measuredBy: string;
}

export const GOALS: readonly Goal[] = [
  {
    id: "relay-100x2-seconds",
    what: "relay 100 MB x 2 round trip, TLS + auth",
    unit: "s",
    compare: "<=",
    target: 1.5,
    digits: 2,
    measuredBy: "relay (case 100x2)",
  },
  {
    id: "relay-100x10-seconds",
    what: "relay 100 MB x 10 round trip, TLS + auth",
    unit: "s",
    compare: "<=",
    target: 6,
    digits: 2,
    measuredBy: "relay (case 100x10)",
  },
  {
    id: "serverapp-peak-rss-100x10-mb",
    what: "ServerApp peak RSS, 100 MB x 10",
    unit: "MB",
    compare: "<=",
    target: 400,
    digits: 0,
    measuredBy: "fedavg (case 100x10), relay (case 100x10)",
  },
  {
    id: "superlink-peak-rss-100x10-mb",
    what: "SuperLink peak RSS, 100 MB x 10",
    unit: "MB",
    compare: "<=",
    target: 400,
    digits: 0,
    measuredBy: "fedavg (case 100x10), relay (case 100x10)",
  },
  {
    id: "broadcast-driver-bytes-per-payload",
    what: "broadcast: Driver API bytes received per round / payload",
    unit: "x",
    compare: "<=",
    target: 1.1,
    digits: 2,
    measuredBy: "relay (case 100x10)",
  },
  {
    id: "registrations-per-second",
    what: "authenticated registrations per second",
    unit: "/s",
    compare: ">=",
    target: 300,
    digits: 0,
    measuredBy: "idle --nodes 300",
  },
  {
    id: "idle-10000-superlink-cores",
    what: "10,000 idle authenticated SuperNodes: SuperLink CPU",
    unit: "cores",
    compare: "<",
    target: 1,
    digits: 2,
    measuredBy: "idle --nodes 10000",
  },
  {
    id: "idle-10000-superlink-rss-mib",
    what: "10,000 idle authenticated SuperNodes: SuperLink RSS",
    unit: "MiB",
    compare: "<",
    target: 1024,
    digits: 0,
    measuredBy: "idle --nodes 10000",
  },
  {
    id: "round-1000-nodes-seconds",
    what: "one round over 1,000 nodes, tiny model",
    unit: "s",
    compare: "<",
    target: 5,
    digits: 2,
    measuredBy: "round1000",
  },
  {
    id: "example-fit-seconds",
    what: "example CNN: default fit (400 images, 1 epoch, batch 16), fastest backend",
    unit: "s",
    compare: "<=",
    target: 1,
    digits: 2,
    measuredBy: "train",
  },
];

export interface GoalRecord {
  id: GoalId;
  source: string;
  note?: string;
  summary: Summary;
  samples: number[];
}

export type GoalStatus = "met" | "NOT met" | "not measured";

export interface GoalRow {
  id: GoalId;
  what: string;
  goal: string;
  source?: string;
  note?: string;
  summary?: Summary;
  status: GoalStatus;
}

/** What this bench run recorded, in recording order. */
const records: GoalRecord[] = [];

/** One measured case of a goal: its samples in the goal's unit (see the convention above). */
export function recordGoal(id: GoalId, samples: readonly number[], source: string, note?: string): void {
  const summary = summarize(samples);
  if (summary === undefined) return;
  records.push({ id, source, summary, samples: [...samples], ...(note !== undefined ? { note } : {}) });
}

/** Bytes in the goals' "MB" (10^6 bytes, as issue 19 counts) from MiB. */
export const mibToMB = (mib: number): number => (mib * 2 ** 20) / 1e6;

function meets(goal: Goal, value: number): boolean {
  if (goal.compare === "<=") return value <= goal.target;
  if (goal.compare === "<") return value < goal.target;
  return value >= goal.target;
}

/** Every goal, once per recorded case, or once as "not measured". */
export function goalRows(): GoalRow[] {
  const rows: GoalRow[] = [];
  for (const goal of GOALS) {
    const text = `${goal.compare} ${goal.target} ${goal.unit}`;
    const mine = records.filter((r) => r.id === goal.id);
    if (mine.length === 0) {
      rows.push({ id: goal.id, what: goal.what, goal: text, status: "not measured", note: `run ${goal.measuredBy}` });
    }
    for (const r of mine) {
      rows.push({
        id: goal.id,
        what: goal.what,
        goal: text,
        source: r.source,
        summary: r.summary,
        status: meets(goal, r.summary.median) ? "met" : "NOT met",
        ...(r.note !== undefined ? { note: r.note } : {}),
      });
    }
  }
  return rows;
}

/** The rows as table cells: goal, target, median [min-max], n, status, measured in, note. */
export function goalCells(rows: readonly GoalRow[]): string[][] {
  return rows.map((row) => {
    const goal = GOALS.find((g) => g.id === row.id);
    const digits = goal?.digits ?? 2;
    const n = row.summary?.n;
    return [
      row.what,
      row.goal,
      formatSummary(row.summary, digits),
      n === undefined ? "-" : n < 10 ? `${n} (< 10)` : String(n),
      row.status,
      row.source ?? "",
      row.note ?? "",
    ];
  });
}

export const GOAL_HEADERS = ["goal", "target", "median [min-max]", "n", "status", "measured in", "note"];
