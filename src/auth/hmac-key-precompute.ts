/**
 * Derives the HMAC keys of known node keys ahead of their first MAC'd call, off the event loop:
 * the ECDH runs as a WebCrypto `deriveBits` job on libuv's thread pool (the same shared secret
 * as `diffieHellman`; HKDF and the public-key import stay on the loop, ~0.2 ms of the ~2 ms).
 * At most a few derivations are in flight, so a long allowlist does not hog the thread pool
 * that TLS and file I/O share.
 */
import { type KeyObject, webcrypto } from "node:crypto";
import { base64UrlPadded, hkdfSha256 } from "./crypto";
import { type EcCurve, curveOf } from "./keys";

/** ECDH shared-secret length in bits per curve (P-521's 521 bits fill 66 bytes). */
const SHARED_SECRET_BITS: Record<EcCurve, number> = { "P-256": 256, "P-384": 384, "P-521": 528 };

/** Default number of derivations in flight (libuv's pool has 4 threads by default). */
const DEFAULT_PRECOMPUTE_CONCURRENCY = 2;

interface SubtleEcdhPrivateKey {
  key: webcrypto.CryptoKey;
  curve: EcCurve;
}

async function importEcdhPrivateKey(privateKey: KeyObject): Promise<SubtleEcdhPrivateKey> {
  const curve = curveOf(privateKey);
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  const key = await webcrypto.subtle.importKey("pkcs8", der, { name: "ECDH", namedCurve: curve }, false, [
    "deriveBits",
  ]);
  return { key, curve };
}

/**
 * The HMAC key of `peerPublicPem` (an SPKI PEM), equal to `deriveHmacKey(privateKey, pem)` but
 * with the scalar multiplication on the thread pool. Rejects for a key on another curve.
 */
async function deriveHmacKeyOffLoop(own: SubtleEcdhPrivateKey, peerPublicPem: string): Promise<Buffer> {
  const der = Buffer.from(peerPublicPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  const peer = await webcrypto.subtle.importKey("spki", der, { name: "ECDH", namedCurve: own.curve }, false, []);
  const shared = await webcrypto.subtle.deriveBits(
    { name: "ECDH", public: peer },
    own.key,
    SHARED_SECRET_BITS[own.curve],
  );
  return Buffer.from(base64UrlPadded(hkdfSha256(new Uint8Array(shared))), "ascii");
}

/** Exposed for tests: the off-loop derivation of one key. */
export async function deriveHmacKeyOnThreadPool(privateKey: KeyObject, peerPublicPem: string): Promise<Buffer> {
  return deriveHmacKeyOffLoop(await importEcdhPrivateKey(privateKey), peerPublicPem);
}

export interface HmacKeyPrecomputerOptions {
  privateKey: KeyObject;
  /** Derivations in flight at most; default 2. */
  concurrency?: number;
  /** Each derived key, while not stopped. */
  onDerived(publicKeyPem: string, hmacKey: Buffer): void;
  /** A key that could not be derived (e.g. on another curve); the on-demand path will say why. */
  onFailed?(publicKeyPem: string, err: unknown): void;
  /** The queue ran empty: keys derived (and failed) since it last was, and the time that took. */
  onFinished?(summary: { derived: number; failed: number; ms: number }): void;
}

/**
 * A bounded queue of keys to derive. `add` queues keys, `remove` unqueues them, `stop` drops the
 * queue and discards results still in flight; `settled()` resolves once none is in flight.
 * Never rejects and never throws from its jobs.
 */
export class HmacKeyPrecomputer {
  private readonly options: HmacKeyPrecomputerOptions;
  private readonly concurrency: number;
  private readonly queue = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private ownKey: Promise<SubtleEcdhPrivateKey> | undefined;
  private stopped = false;
  private batch: { startedAt: number; derived: number; failed: number } | undefined;

  constructor(options: HmacKeyPrecomputerOptions) {
    this.options = options;
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? DEFAULT_PRECOMPUTE_CONCURRENCY));
  }

  /** Keys waiting (not yet in flight). */
  get pending(): number {
    return this.queue.size;
  }

  add(publicKeyPems: Iterable<string>): void {
    if (this.stopped) return;
    for (const pem of publicKeyPems) this.queue.add(pem);
    if (this.queue.size > 0) this.batch ??= { startedAt: performance.now(), derived: 0, failed: 0 };
    this.pump();
  }

  remove(publicKeyPems: Iterable<string>): void {
    for (const pem of publicKeyPems) this.queue.delete(pem);
  }

  stop(): void {
    this.stopped = true;
    this.queue.clear();
  }

  /** Resolves once no derivation is in flight (after `stop()`: nothing more starts). */
  async settled(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.concurrency) {
      const next = this.queue.values().next();
      if (next.done === true) break;
      this.queue.delete(next.value);
      const job = this.runOne(next.value);
      this.running.add(job);
      void job.then(() => {
        this.running.delete(job);
        this.afterJob();
      });
    }
  }

  private async runOne(pem: string): Promise<void> {
    try {
      this.ownKey ??= importEcdhPrivateKey(this.options.privateKey);
      const hmacKey = await deriveHmacKeyOffLoop(await this.ownKey, pem);
      if (this.stopped) return;
      if (this.batch) this.batch.derived++;
      this.options.onDerived(pem, hmacKey);
    } catch (err) {
      if (this.stopped) return;
      if (this.batch) this.batch.failed++;
      try {
        this.options.onFailed?.(pem, err);
      } catch {
        // A failing log line must not turn into an unhandled rejection.
      }
    }
  }

  private afterJob(): void {
    if (this.stopped) return;
    this.pump();
    if (this.running.size > 0 || this.queue.size > 0 || this.batch === undefined) return;
    const { startedAt, derived, failed } = this.batch;
    this.batch = undefined;
    try {
      this.options.onFinished?.({ derived, failed, ms: performance.now() - startedAt });
    } catch {
      // As above: reporting never breaks the queue.
    }
  }
}
