/**
 * Admission of large request messages by a memory budget (flwr-ts).
 *
 * When a broadcast reaches every node at once, every node uploads its large result at once, and
 * a server that reads them all holds all of them: in flight, stored, and while they are sent on
 * (a PullTaskRes answer references the received bytes until it is written) until V8 frees them.
 * So a large message (at least `minMessageBytes`, from its gRPC frame header) is read only while
 * the bytes of the large messages admitted before it that are still alive plus its own fit in
 * `budgetBytes`; otherwise its stream is paused (HTTP/2 flow control then holds the sender back
 * after one stream window, and the connection's other calls go on) and resumed when budget frees,
 * first come first served. "Alive" ends when the message's memory is collected (a
 * FinalizationRegistry on its ArrayBuffer, so whoever still references it keeps it counted) or
 * when its call ends before the message was whole.
 *
 * Nothing waits forever: the first large message is always admitted, and a held one is admitted
 * after `maxWaitMs` even if nothing freed (e.g. no ServerApp pulls the stored results), so the
 * budget bounds memory in the common case and only delays, never refuses.
 */

const DEFAULT_COLLECT_INTERVAL_MS = 1000;

export interface ReceiveAdmissionOptions {
  /** Most bytes of admitted large messages alive at once. */
  budgetBytes: number;
  /** Messages of at least this many bytes are admitted by the budget; smaller ones never wait. */
  minMessageBytes: number;
  /** A held message is admitted after this long, budget or not. */
  maxWaitMs: number;
  /**
   * Asks for a garbage collection; called every `collectIntervalMs` while messages wait, since
   * the memory that frees budget is freed only by a collection, and a process whose uploads wait
   * allocates little that would bring one.
   */
  collect?: () => void;
  /** Default 1 s (a collection of a small heap costs a few ms; a large one much more). */
  collectIntervalMs?: number;
  /** Told when a message was admitted by `maxWaitMs` (for a log line). */
  onAdmittedAfterMaxWait?: (bytes: number, stats: ReceiveAdmissionStats) => void;
}

/** What the admission has done so far (for metrics and tests). */
export interface ReceiveAdmissionStats {
  /** Bytes of admitted large messages alive now. */
  heldBytes: number;
  /** The most `heldBytes` has been. */
  peakHeldBytes: number;
  /** Large messages admitted. */
  admitted: number;
  /** Of those, how many had to wait. */
  waited: number;
  /** Of those, how many were admitted by `maxWaitMs`, not by freed budget. */
  admittedAfterMaxWait: number;
  /** Large messages waiting now. */
  waiting: number;
}

/** One large message's claim on the budget. */
export interface AdmissionTicket {
  /** True once the message may be read. */
  readonly admitted: boolean;
  /** The message is whole: its bytes count until `memory` is collected. */
  received(memory: ArrayBuffer): void;
  /** The call ended: a message not yet whole stops counting (or stops waiting). Idempotent. */
  cancel(): void;
}

export class ReceiveAdmission {
  readonly budgetBytes: number;
  readonly minMessageBytes: number;
  readonly maxWaitMs: number;
  private held = 0;
  private peak = 0;
  private admittedCount = 0;
  private waitedCount = 0;
  private afterMaxWait = 0;
  private readonly queue: Ticket[] = [];
  private readonly collect: (() => void) | undefined;
  private readonly collectIntervalMs: number;
  private collectTimer: NodeJS.Timeout | undefined;
  private readonly onAdmittedAfterMaxWait: ((bytes: number, stats: ReceiveAdmissionStats) => void) | undefined;
  private readonly collected = new FinalizationRegistry<Ticket>((ticket) => ticket.release());

  constructor(options: ReceiveAdmissionOptions) {
    for (const [name, value] of [
      ["budgetBytes", options.budgetBytes],
      ["minMessageBytes", options.minMessageBytes],
      ["maxWaitMs", options.maxWaitMs],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 0)
        throw new RangeError(`${name} must be an integer >= 0, got ${value}`);
    }
    this.budgetBytes = options.budgetBytes;
    this.minMessageBytes = Math.max(1, options.minMessageBytes);
    this.maxWaitMs = options.maxWaitMs;
    this.onAdmittedAfterMaxWait = options.onAdmittedAfterMaxWait;
    this.collect = options.collect;
    this.collectIntervalMs = Math.max(1, options.collectIntervalMs ?? DEFAULT_COLLECT_INTERVAL_MS);
  }

  /**
   * A claim for a message of `bytes`: admitted at once when it fits (or nothing is held), else
   * queued; `onAdmitted` runs when a queued claim is admitted later (never for one admitted at once).
   */
  request(bytes: number, onAdmitted: () => void): AdmissionTicket {
    const ticket = new Ticket(this, bytes, onAdmitted);
    if (this.queue.length === 0 && this.fits(bytes)) this.admit(ticket, false);
    else {
      this.queue.push(ticket);
      ticket.startTimer(this.maxWaitMs);
      this.collectWhileWaiting();
    }
    return ticket;
  }

  stats(): ReceiveAdmissionStats {
    return {
      heldBytes: this.held,
      peakHeldBytes: this.peak,
      admitted: this.admittedCount,
      waited: this.waitedCount,
      admittedAfterMaxWait: this.afterMaxWait,
      waiting: this.queue.length,
    };
  }

  /** @internal (Ticket) */
  admit(ticket: Ticket, waited: boolean, byMaxWait = false): void {
    this.held += ticket.bytes;
    this.peak = Math.max(this.peak, this.held);
    this.admittedCount++;
    if (waited) this.waitedCount++;
    if (byMaxWait) this.afterMaxWait++;
    ticket.markAdmitted();
  }

  /** @internal (Ticket) */
  dequeue(ticket: Ticket): void {
    const i = this.queue.indexOf(ticket);
    if (i >= 0) this.queue.splice(i, 1);
  }

  /** @internal (Ticket): a waiting claim's call ended; the ones behind it may fit now. */
  withdraw(ticket: Ticket): void {
    this.dequeue(ticket);
    this.admitQueued();
  }

  /** @internal (Ticket) */
  watchCollection(memory: ArrayBuffer, ticket: Ticket): void {
    this.collected.register(memory, ticket);
  }

  /** @internal (Ticket): `bytes` stopped counting; admit what fits now, in order. */
  freed(bytes: number): void {
    this.held -= bytes;
    this.admitQueued();
  }

  /** @internal (Ticket): its wait ran out. */
  waitedTooLong(ticket: Ticket): void {
    this.dequeue(ticket);
    this.admit(ticket, true, true);
    this.onAdmittedAfterMaxWait?.(ticket.bytes, this.stats());
    ticket.notify();
    // Ones behind it may fit now that the head of the queue is gone.
    this.admitQueued();
  }

  private collectWhileWaiting(): void {
    const collect = this.collect;
    if (collect === undefined || this.collectTimer !== undefined) return;
    this.collectTimer = setInterval(() => {
      if (this.queue.length === 0) {
        clearInterval(this.collectTimer);
        this.collectTimer = undefined;
        return;
      }
      collect();
    }, this.collectIntervalMs);
    this.collectTimer.unref();
  }

  private admitQueued(): void {
    for (let next = this.queue[0]; next !== undefined && this.fits(next.bytes); next = this.queue[0]) {
      this.queue.shift();
      this.admit(next, true);
      next.notify();
    }
  }

  private fits(bytes: number): boolean {
    return this.held === 0 || this.held + bytes <= this.budgetBytes;
  }
}

type TicketState = "waiting" | "admitted" | "received" | "released";

class Ticket implements AdmissionTicket {
  private state: TicketState = "waiting";
  private timer: NodeJS.Timeout | undefined;

  /** Dropped once called or no longer needed: the registry holds the ticket strongly, and this
   * closure reaches the call (and through its request, the very memory the ticket watches). */
  private onAdmitted: (() => void) | undefined;

  constructor(
    private readonly owner: ReceiveAdmission,
    readonly bytes: number,
    onAdmitted: () => void,
  ) {
    this.onAdmitted = onAdmitted;
  }

  get admitted(): boolean {
    return this.state !== "waiting";
  }

  startTimer(ms: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.state === "waiting") this.owner.waitedTooLong(this);
    }, ms);
    this.timer.unref();
  }

  markAdmitted(): void {
    this.state = "admitted";
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  notify(): void {
    const onAdmitted = this.onAdmitted;
    this.onAdmitted = undefined;
    onAdmitted?.();
  }

  received(memory: ArrayBuffer): void {
    if (this.state === "waiting") {
      // Whole before it was admitted (it cannot be, past one stream window): it counts from now.
      this.owner.dequeue(this);
      this.owner.admit(this, true);
    }
    this.onAdmitted = undefined;
    if (this.state !== "admitted") return;
    this.state = "received";
    this.owner.watchCollection(memory, this);
  }

  cancel(): void {
    this.onAdmitted = undefined;
    if (this.state === "waiting") {
      this.state = "released";
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      this.owner.withdraw(this);
      return;
    }
    if (this.state === "admitted") this.release();
  }

  /** Stops counting (collected, or cancelled before whole). */
  release(): void {
    if (this.state === "released" || this.state === "waiting") return;
    this.state = "released";
    this.owner.freed(this.bytes);
  }
}
