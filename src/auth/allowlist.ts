/**
 * The SuperLink's set of SuperNode public keys allowed to use the Fleet API, loaded from the
 * allowlist CSV. Unlike Flower 1.10 (read once at startup), the list can be reloaded while
 * running: on request (`reload()`, e.g. on SIGHUP) or by watching the file. A reload that fails
 * keeps the previous list, so a half-saved or broken file never locks every node out.
 */
import { EventEmitter } from "node:events";
import { statSync } from "node:fs";
import { InvalidConfigError, errorMessage } from "../core/errors";
import { type Logger, silentLogger } from "../core/logger";
import { loadAllowlistCsv } from "./allowlist-csv";

/** What a reload changed: canonical PEMs added to and removed from the list. */
export interface AllowlistChange {
  added: string[];
  removed: string[];
}

export interface AllowlistOptions {
  /**
   * Reload whenever the file changes. The file's stat is polled (robust against editors that
   * replace the file, and against a change racing the initial load).
   */
  watch?: boolean;
  /** Poll interval of `watch`, in ms; default 500. */
  watchIntervalMs?: number;
  logger?: Logger;
}

/** Default poll interval of a watched allowlist file, in ms. */
const DEFAULT_ALLOWLIST_POLL_MS = 500;

/**
 * Canonical PEM public keys (see keys.ts) of the SuperNodes allowed to authenticate.
 *
 * Events: `"change"` with an {@link AllowlistChange} after a reload that added or removed keys.
 */
export class Allowlist extends EventEmitter {
  private keys: Set<string>;
  private readonly path: string | undefined;
  private readonly logger: Logger;
  private pollTimer: NodeJS.Timeout | undefined;
  /** Identity of the file version last read (or tried), taken just before reading it. */
  private lastSeen: string | undefined;

  /**
   * A fixed list (`path` undefined) or one backed by a CSV file; prefer {@link fromCsvFile}.
   * The keys must already be canonical PEMs.
   */
  constructor(keys: Iterable<string>, options: { path?: string; logger?: Logger } = {}) {
    super();
    this.keys = new Set(keys);
    this.path = options.path;
    this.logger = options.logger ?? silentLogger();
  }

  /**
   * Loads the allowlist CSV (throws InvalidKeyFileError for a missing or malformed file) and,
   * with `watch: true`, starts watching it; call `close()` to stop.
   */
  static fromCsvFile(path: string, options: AllowlistOptions = {}): Allowlist {
    const seen = fileVersion(path);
    const list = new Allowlist(loadAllowlistCsv(path), { path, ...(options.logger ? { logger: options.logger } : {}) });
    list.lastSeen = seen;
    if (list.size === 0) list.logger.warn({ path }, "Authentication enabled, but no known public keys configured");
    if (options.watch) list.watch(options.watchIntervalMs ?? DEFAULT_ALLOWLIST_POLL_MS);
    return list;
  }

  /** Number of keys. */
  get size(): number {
    return this.keys.size;
  }

  /** The file this list was loaded from, if any. */
  get filePath(): string | undefined {
    return this.path;
  }

  /**
   * Whether the canonical PEM (text, or its bytes as received in a `public-key` header) is in
   * the list. The comparison is exact, byte for byte, as in Flower.
   */
  has(pem: string | Uint8Array): boolean {
    const text =
      typeof pem === "string" ? pem : Buffer.from(pem.buffer, pem.byteOffset, pem.byteLength).toString("latin1");
    return this.keys.has(text);
  }

  /** A snapshot of the keys. */
  values(): string[] {
    return [...this.keys];
  }

  /**
   * Re-reads the CSV file. On success replaces the list, emits `"change"` if keys were added or
   * removed, and returns the difference. On failure throws (InvalidKeyFileError for a missing or
   * malformed file) and keeps the previous list unchanged. Throws InvalidConfigError for a list
   * that was not loaded from a file.
   */
  reload(): AllowlistChange {
    if (this.path === undefined)
      throw new InvalidConfigError("This allowlist was not loaded from a file; nothing to reload");
    // Stat before reading: a write racing the read is then seen again by the watcher.
    this.lastSeen = fileVersion(this.path);
    const loaded = loadAllowlistCsv(this.path);
    const added = [...loaded].filter((k) => !this.keys.has(k));
    const removed = [...this.keys].filter((k) => !loaded.has(k));
    // The kept keys stay the strings already held (also by the authenticator's HMAC key map), so
    // a reload does not leave two copies of each; added ones come from the new file.
    const next = new Set([...this.keys].filter((k) => loaded.has(k)).concat(added));
    this.keys = next;
    const change = { added, removed };
    if (added.length > 0 || removed.length > 0) {
      this.logger.info(
        { path: this.path, added: added.length, removed: removed.length, size: next.size },
        `Allowlist reloaded: ${added.length} key(s) added, ${removed.length} removed, ${next.size} in total`,
      );
      this.emit("change", change);
    }
    return change;
  }

  /** Stops watching the file (if watched). Idempotent. */
  close(): void {
    if (this.pollTimer !== undefined) {
      clearInterval(this.pollTimer);
      this.pollTimer = undefined;
    }
  }

  /**
   * Reloads the list whenever its file changes (the file's stat is polled every `intervalMs`)
   * until close(). A no-op for a list without a file or one already watched.
   */
  watch(intervalMs: number = DEFAULT_ALLOWLIST_POLL_MS): void {
    const path = this.path;
    if (path === undefined || this.pollTimer !== undefined) return;
    this.pollTimer = setInterval(() => {
      if (fileVersion(path) === this.lastSeen) return;
      try {
        this.reload();
      } catch (err) {
        // Watching must never take the SuperLink down; the old list stays in force. The broken
        // version is remembered (reload set lastSeen), so it is reported once, not every poll.
        this.logger.error(
          { err, path },
          `Allowlist file ${path} changed but could not be loaded; keeping the previous ${this.keys.size} key(s): ${errorMessage(err)}`,
        );
      }
    }, intervalMs);
    // The watcher alone must not keep the process alive.
    this.pollTimer.unref();
  }
}

/** A string that changes whenever the file is rewritten or replaced; "absent" if missing. */
function fileVersion(path: string): string {
  try {
    const st = statSync(path, { bigint: true, throwIfNoEntry: false });
    if (st === undefined) return "absent";
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch (err) {
    return `error:${errorMessage(err)}`;
  }
}
