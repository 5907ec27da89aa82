/**
 * How many results a long-polled PullTaskRes answer carries (flwr-ts; Flower 1.10 answers with
 * every result there is). When the results of a round arrive together (a broadcast reaches
 * every node at once), one answer could carry several 100 MB results, and the ServerApp would
 * receive, hold and decode them all at once. Once the results seen are large, an answer carries
 * about `maxAnswerBytes` of them (at least one); the rest stay undelivered for the next pull,
 * which our ServerApp makes at once. Flower's ServerApps do not long-poll and sleep 3 s between
 * pulls, so their answers are never capped (a cap would only slow them down).
 */
import { tasksPayloadBytes } from "../../core/wire/payload-bytes";
import type { TaskRes } from "../../proto/flwr/proto/task";

/** About this much tensor payload per long-polled answer, once results are known to be large. */
const DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024;
/** A cap of this many results or more is no cap: small results go out all together. */
const UNCAPPED_RESULTS = 1000;

/**
 * The SuperLink's running estimate of a result's size (from the last non-empty answer), and the
 * result count it implies for the next long-polled answer.
 */
export class ResultAnswerSizing {
  private averageBytes = 0;

  constructor(private readonly maxAnswerBytes: number = DEFAULT_MAX_ANSWER_BYTES) {}

  /** Most results for the next answer; undefined = all there are. */
  limit(): number | undefined {
    if (this.averageBytes === 0) return undefined;
    const results = Math.floor(this.maxAnswerBytes / this.averageBytes);
    return results >= UNCAPPED_RESULTS ? undefined : Math.max(1, results);
  }

  /** Learns from an answer's results (an empty answer teaches nothing). */
  observe(taskResList: readonly TaskRes[]): void {
    if (taskResList.length === 0) return;
    this.averageBytes = tasksPayloadBytes(taskResList) / taskResList.length;
  }
}
