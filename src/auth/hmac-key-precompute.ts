/**
 * Derives the HMAC keys of known node keys ahead of their first MAC'd call, off the event loop:
 * a worker thread runs the same recipe as `deriveHmacKey` (PEM import, ECDH, HKDF; ~2 ms of CPU
 * per P-384 key) on batches of keys, one batch at a time, so it takes at most one core and none
 * of libuv's thread pool that TLS and file I/O share. WebCrypto's `deriveBits` (thread pool) gives
 * the same bytes but cost twice the CPU per key (3.8 vs 1.7 ms on P-384) plus ~1 ms on the loop.
 * The worker exists only while keys are queued.
 */
import type { KeyObject } from "node:crypto";
import { Worker } from "node:worker_threads";

/** Keys per message to the worker: small enough that stopping never waits long. */
const KEYS_PER_BATCH = 8;

/**
 * The worker's code (CommonJS, node:crypto only; evaluated, so it needs no file of its own).
 * Must match crypto.ts's deriveHmacKey: base64url-padded HKDF-SHA256(ECDH Z), no salt or info;
 * the tests compare both on every curve.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { createPublicKey, diffieHellman, hkdfSync } = require("node:crypto");
const privateKey = workerData.privateKey;
parentPort.on("message", (pems) => {
  parentPort.postMessage(pems.map((pem) => {
    try {
      const z = diffieHellman({ privateKey, publicKey: createPublicKey(pem) });
      const okm = Buffer.from(hkdfSync("sha256", z, Buffer.alloc(0), Buffer.alloc(0), 32));
      const unpadded = okm.toString("base64url");
      return { key: unpadded + "=".repeat((4 - (unpadded.length % 4)) % 4) };
    } catch (err) {
      return { error: String((err && err.message) || err) };
    }
  }));
});
`;

/**
 * One result per key of the batch, in its order. The PEM is not sent back: a copy of it would be
 * a second ~230-byte string per key for the maps to hold instead of the allowlist's own.
 */
type WorkerResult = { key: string } | { error: string };

/**
 * The worker holds 8 keys at a time. A small young generation makes it collect each batch's
 * KeyObjects soon (only a GC frees their native keys): the thread's malloc arena stays resident
 * at its peak size after the worker ends.
 */
const WORKER_HEAP_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 };

export interface HmacKeyPrecomputerOptions {
  privateKey: KeyObject;
  /** Each derived key, while not stopped. */
  onDerived(publicKeyPem: string, hmacKey: Buffer): void;
  /** A key that could not be derived (e.g. on another curve); the on-demand path will say why. */
  onFailed?(publicKeyPem: string, err: unknown): void;
  /** The queue ran empty: keys derived (and failed) since it last was, and the time that took. */
  onFinished?(summary: { derived: number; failed: number; ms: number }): void;
}

/**
 * A queue of keys to derive in one worker thread. `add` queues keys, `remove` unqueues them,
 * `stop` drops the queue, ends the worker and discards results still in flight; `settled()`
 * resolves once the worker is gone. Never rejects and never throws from its callbacks.
 */
export class HmacKeyPrecomputer {
  private readonly options: HmacKeyPrecomputerOptions;
  private readonly queue = new Set<string>();
  private worker: Worker | undefined;
  /** The batch the worker is on, if any. */
  private inFlight: string[] | undefined;
  /** Terminations not yet completed. */
  private readonly exiting = new Set<Promise<unknown>>();
  private stopped = false;
  private batch: { startedAt: number; derived: number; failed: number } | undefined;

  constructor(options: HmacKeyPrecomputerOptions) {
    this.options = options;
  }

  /** Keys waiting (not yet sent to the worker). */
  get pending(): number {
    return this.queue.size;
  }

  add(publicKeyPems: Iterable<string>): void {
    if (this.stopped) return;
    for (const pem of publicKeyPems) this.queue.add(pem);
    if (this.queue.size > 0) this.batch ??= { startedAt: performance.now(), derived: 0, failed: 0 };
    this.sendNext();
  }

  remove(publicKeyPems: Iterable<string>): void {
    for (const pem of publicKeyPems) this.queue.delete(pem);
  }

  stop(): void {
    this.stopped = true;
    this.queue.clear();
    this.endWorker();
  }

  /** Resolves once no worker is left (after `stop()`: nothing more starts). */
  async settled(): Promise<void> {
    while (this.exiting.size > 0) await Promise.all([...this.exiting]);
  }

  private sendNext(): void {
    if (this.stopped || this.inFlight !== undefined) return;
    const keys: string[] = [];
    for (const pem of this.queue) {
      keys.push(pem);
      if (keys.length >= KEYS_PER_BATCH) break;
    }
    if (keys.length === 0) {
      this.endWorker();
      this.finishBatch();
      return;
    }
    for (const pem of keys) this.queue.delete(pem);
    this.inFlight = keys;
    this.startedWorker().postMessage(keys);
  }

  private startedWorker(): Worker {
    if (this.worker !== undefined) return this.worker;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { privateKey: this.options.privateKey },
      resourceLimits: WORKER_HEAP_LIMITS,
    });
    worker.on("message", (results: WorkerResult[]) => {
      if (worker !== this.worker) return;
      const batch = this.inFlight ?? [];
      this.inFlight = undefined;
      batch.forEach((pem, i) => this.report(pem, results[i] ?? { error: "no result from the worker" }));
      this.sendNext();
    });
    worker.on("error", (err) => {
      if (worker !== this.worker) return;
      // The keys of the lost batch go to the on-demand path; the next batch gets a new worker.
      for (const pem of this.inFlight ?? []) this.report(pem, { error: String(err) });
      this.inFlight = undefined;
      this.worker = undefined;
      this.sendNext();
    });
    this.worker = worker;
    return worker;
  }

  private endWorker(): void {
    const worker = this.worker;
    if (worker === undefined) return;
    this.worker = undefined;
    this.inFlight = undefined;
    const exited = worker.terminate().catch(() => undefined);
    this.exiting.add(exited);
    void exited.then(() => this.exiting.delete(exited));
  }

  private report(pem: string, result: WorkerResult): void {
    if (this.stopped) return;
    try {
      if ("key" in result) {
        if (this.batch) this.batch.derived++;
        this.options.onDerived(pem, Buffer.from(result.key, "ascii"));
      } else {
        if (this.batch) this.batch.failed++;
        this.options.onFailed?.(pem, new Error(result.error));
      }
    } catch {
      // A failing callback (a log line) must not stop the queue.
    }
  }

  private finishBatch(): void {
    if (this.batch === undefined) return;
    const { startedAt, derived, failed } = this.batch;
    this.batch = undefined;
    try {
      this.options.onFinished?.({ derived, failed, ms: performance.now() - startedAt });
    } catch {
      // As above.
    }
  }
}
