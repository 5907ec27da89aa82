/**
 * The in-memory state's shared contents (docs/protocol.md, "Shared content"), kept out of the
 * SuperLink's memory once every TaskIns that uses them has been delivered.
 *
 * A broadcast of 100 MB was held from its upload until the round's last result was pulled, that
 * is through the whole round, only because a delivered TaskIns whose lease runs out is delivered
 * again (and a later push may name the content by digest). Once a content's last undelivered
 * TaskIns has been delivered, its encoded bytes are written to an unlinked temporary file
 * (src/core/unlinked-file.ts) and the state drops its references to them and to the decoded
 * RecordSet. Deliveries of a large content carry a deferred RecordSet
 * (src/core/wire/deferred-recordset.ts) rather than the content itself, so the answers waiting to
 * be written hold none of it: a gRPC answer reads its bytes batch by batch through a reader of
 * its own (`openReader`), from memory while anything still holds them, else from the file,
 * hashing what it reads from the file and checking the digest before it hands out the batch that
 * ends the content: an answer from a bad file is aborted short of its last byte, so no SuperNode
 * gets a complete message with wrong bytes. A redelivery or a lookup by digest reads the bytes
 * back whole, checks their digest and decodes them as an upload is decoded, so what is pulled is
 * byte-identical. Byte accounting does not change: the content counts until its last TaskIns is
 * removed, which closes the file; answers still being written from it keep its bytes and file
 * until they are done (the last reader to finish closes it), and only `close()` (shutdown) cuts
 * them short.
 *
 * The write runs on a libuv thread, off the event loop; until it has completed the content stays
 * in memory and is used from there. A write that fails (disk full) leaves the content in memory
 * (logged once). A read that fails (EIO, a short file, wrong bytes: logged once, the file closed)
 * makes the content unavailable: the answer being written fails, the redelivery is skipped (the
 * task stays leased, and expires unless a result comes) and a lookup by digest finds nothing, so
 * the Driver uploads the content again, which brings it back.
 */
import { type Hash, createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { StateError, errorMessage } from "../core/errors";
import { openUnlinkedFile, readFullySync, writeAll } from "../core/unlinked-file";
import type { DeferredReader } from "../core/wire/chunked-writer";
import { type DeferredRecordSetSource, deferredRecordSet } from "../core/wire/deferred-recordset";
import { recordSetPayloadBytes } from "../core/wire/payload-bytes";
import { RecordSet } from "../proto/flwr/proto/recordset";
import type { SharedContent, StateLogger } from "./state";
import { contentDigest } from "./state-support";

/**
 * Contents smaller than this stay in memory: a small broadcast costs little to keep, and a spill
 * file per evaluate config would cost more in system calls than it frees.
 */
const CONTENT_SPILL_MIN_BYTES = 16 * 1024 * 1024;

/**
 * A reader that switches to the file mid-answer hashes the part it sent from memory by reading it
 * from the file too, at most this many times the bytes of each range it is asked for (so the
 * event loop is never held for long), and whatever is left before the last range.
 */
const CATCH_UP_FACTOR = 4;
/** Largest single read of that catch-up. */
const CATCH_UP_READ_BYTES = 1024 * 1024;

/** Where and from what size delivered contents are spilled. */
export interface ContentSpillOptions {
  /** Contents of at least this many encoded bytes are spilled (default CONTENT_SPILL_MIN_BYTES; Infinity: never). */
  minBytes?: number;
  /** Directory the unlinked files are created in (default the OS temporary directory). */
  dir?: string;
  /**
   * Read a spilled content back on every use, even while a copy handed out earlier is still
   * alive (default false: that copy is used). For tests of the read-back path.
   */
  alwaysReadBack?: boolean;
}

/** What the store holds, for tests and diagnostics. */
export interface ContentMemory {
  /** Stored contents. */
  contents: number;
  /** Of which held in memory by the state. */
  inMemory: number;
  /** Their encoded bytes. */
  inMemoryBytes: number;
  /** Contents whose bytes are in a spill file. */
  spilled: number;
  /** Contents read back from their file so far. */
  readBacks: number;
}

interface StoredContent {
  digest: string;
  byteLength: number;
  /** Tensor bytes of its RecordSet (what the answer pacing counts). */
  payloadBytes: number;
  /** What deliveries of a large content read from (made on first use). */
  source?: DeferredRecordSetSource;
  /** Stored TaskIns referencing it. */
  refs: number;
  /** Of those, the ones never delivered. */
  undelivered: number;
  /** The content, while the state holds it. */
  held?: SharedContent;
  /** The last copy used after `held` was dropped, while something else still holds it. */
  recent?: WeakRef<SharedContent>;
  /** The spill file holding `encoded`, once written. */
  file?: FileHandle;
  spilling: boolean;
  /** A spill write failed: the content stays in memory. */
  spillFailed: boolean;
  /** Deleted from the store (a write in progress closes its file when it completes). */
  removed: boolean;
  /**
   * Answers being written from it (DeferredBytes.open): while there are any, a removal keeps its
   * bytes and file for them, and the last one to finish lets go of them.
   */
  readers: number;
}

/** Fills `into` from `file` at `at`; throws when the file (of `total` bytes when whole) ends first. */
function readRange(file: FileHandle, into: Buffer, at: number, total: number): void {
  const read = readFullySync(file.fd, into, at);
  if (read < into.length) throw new Error(`the file ends at ${at + read} of ${total} bytes`);
}

function closeQuietly(file: FileHandle): void {
  file.close().catch(() => undefined);
}

/** Shared contents by key (run and digest), each with its references and, maybe, its spill file. */
export class SharedContentStore {
  private readonly contents = new Map<string, StoredContent>();
  private readonly minBytes: number;
  private readonly dir: string;
  private readonly alwaysReadBack: boolean;
  private readonly pending = new Set<Promise<void>>();
  /** Deleted contents kept for the answers still being written from them. */
  private readonly lingering = new Set<StoredContent>();
  private readBacks = 0;
  private spillFailureLogged = false;
  private closed = false;

  constructor(
    options: ContentSpillOptions,
    private readonly logger: StateLogger | undefined,
  ) {
    this.minBytes = options.minBytes ?? CONTENT_SPILL_MIN_BYTES;
    this.dir = options.dir ?? tmpdir();
    this.alwaysReadBack = options.alwaysReadBack ?? false;
  }

  get size(): number {
    return this.contents.size;
  }

  has(key: string): boolean {
    return this.contents.has(key);
  }

  /**
   * Counts a new, undelivered TaskIns using `shared` (stored under `key`); true when the content
   * was not stored yet (the caller charges its bytes). A content that was spilled is held in
   * memory again until this TaskIns, too, has been delivered.
   */
  addRef(key: string, shared: SharedContent): boolean {
    const entry = this.contents.get(key);
    if (entry === undefined) {
      this.contents.set(key, {
        digest: shared.digest,
        byteLength: shared.encoded.length,
        payloadBytes: recordSetPayloadBytes(shared.recordset),
        refs: 1,
        undelivered: 1,
        held: shared,
        spilling: false,
        spillFailed: false,
        removed: false,
        readers: 0,
      });
      return true;
    }
    entry.refs++;
    entry.undelivered++;
    // Same digest, same bytes: keep the copy pull answers may still hold rather than a second one.
    entry.held ??= this.liveCopy(entry) ?? shared;
    return false;
  }

  /** A TaskIns using the content under `key` was delivered for the first time. */
  delivered(key: string): void {
    const entry = this.contents.get(key);
    if (entry === undefined) return;
    entry.undelivered--;
    this.maybeSpill(entry);
  }

  /**
   * A stored TaskIns using the content under `key` was removed (`undelivered`: never delivered).
   * Returns the bytes to uncount: the content's, when that was its last TaskIns, else 0.
   */
  removeRef(key: string, undelivered: boolean): number {
    const entry = this.contents.get(key);
    if (entry === undefined) return 0;
    entry.refs--;
    if (undelivered) entry.undelivered--;
    if (entry.refs > 0) {
      this.maybeSpill(entry);
      return 0;
    }
    this.contents.delete(key);
    this.drop(entry);
    return entry.byteLength;
  }

  /**
   * The RecordSet a delivery of the content under `key` carries: a small content's own; for a
   * large one, a deferred RecordSet (src/core/wire/deferred-recordset.ts) reading the bytes from
   * memory while the state holds them and from the spill file afterwards, so an answer waiting to
   * be written keeps nothing alive. Undefined when there is none, or it cannot be read back.
   */
  deliveryRecordSet(key: string): RecordSet | undefined {
    const entry = this.contents.get(key);
    if (entry === undefined) return undefined;
    if (entry.byteLength < this.minBytes) return this.content(key)?.recordset;
    // Only a redelivery finds it on disk alone: read back whole once, so a bad file is found now.
    if (entry.held === undefined && this.contentOf(entry) === undefined) return undefined;
    return deferredRecordSet((entry.source ??= this.sourceOf(entry)));
  }

  /**
   * The content under `key`: from memory, or read back from its spill file (digest checked,
   * decoded strictly). Undefined when none is stored or it cannot be read back (logged).
   */
  content(key: string): SharedContent | undefined {
    const entry = this.contents.get(key);
    return entry === undefined ? undefined : this.contentOf(entry);
  }

  private contentOf(entry: StoredContent): SharedContent | undefined {
    const inMemory = entry.held ?? this.liveCopy(entry);
    if (inMemory !== undefined) return inMemory;
    if (entry.file === undefined) return undefined;
    try {
      const content = this.readBack(entry, entry.file);
      entry.recent = new WeakRef(content);
      this.readBacks++;
      return content;
    } catch (err) {
      this.fileFailed(entry, entry.file, err);
      return undefined;
    }
  }

  /**
   * `file` gave wrong bytes or none: unless that was handled already, logged, closed and no
   * longer used (answers still reading it fail; the content is delivered only from memory, if at
   * all, until the Driver uploads it again).
   */
  private fileFailed(entry: StoredContent, file: FileHandle, err: unknown): void {
    if (entry.file !== file) return;
    this.logger?.error(
      { event: "state.shared-content-unreadable", digest: entry.digest, err },
      `Shared content ${entry.digest.slice(0, 16)}… could not be read back from its spill file ` +
        `(${errorMessage(err)}); its TaskIns are not delivered again until the Driver uploads it again`,
    );
    closeQuietly(file);
    delete entry.file;
  }

  memory(): ContentMemory {
    const memory: ContentMemory = { contents: 0, inMemory: 0, inMemoryBytes: 0, spilled: 0, readBacks: this.readBacks };
    for (const entry of this.contents.values()) {
      memory.contents++;
      if (entry.held !== undefined) {
        memory.inMemory++;
        memory.inMemoryBytes += entry.byteLength;
      }
      if (entry.file !== undefined) memory.spilled++;
    }
    return memory;
  }

  /** Resolves once no spill write is in progress. */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /**
   * Closes every spill file, at once: answers still being written from one fail (writes in
   * progress close theirs when they complete).
   */
  close(): void {
    this.closed = true;
    for (const entry of this.contents.values()) this.drop(entry, true);
    for (const entry of this.lingering) this.drop(entry, true);
    this.contents.clear();
    this.lingering.clear();
  }

  /**
   * Forgets a deleted content's bytes and closes its file (a read after that fails cleanly); while
   * answers are being written from it (unless `now`), once the last of them is done.
   */
  private drop(entry: StoredContent, now = false): void {
    entry.removed = true;
    if (entry.readers > 0 && !now) {
      this.lingering.add(entry);
      return;
    }
    this.lingering.delete(entry);
    delete entry.held;
    delete entry.recent;
    if (entry.file !== undefined) closeQuietly(entry.file);
    delete entry.file;
  }

  private sourceOf(entry: StoredContent): DeferredRecordSetSource {
    return {
      byteLength: entry.byteLength,
      payloadBytes: entry.payloadBytes,
      // Writers read through `open`; any other range comes from the content, read back whole.
      slice: (offset, length) => {
        const content = entry.removed ? undefined : this.contentOf(entry);
        if (content === undefined) throw this.unreadable(entry);
        return content.encoded.subarray(offset, offset + length);
      },
      open: () => this.openReader(entry),
      load: () => {
        const content = entry.removed ? undefined : this.contentOf(entry);
        if (content === undefined) throw this.unreadable(entry);
        return content.recordset;
      },
    };
  }

  private unreadable(entry: StoredContent, why?: string): StateError {
    why ??= entry.removed ? "it was deleted" : "its spill file failed";
    return new StateError(`Shared content ${entry.digest.slice(0, 16)}… cannot be read: ${why}`);
  }

  /**
   * A reader for one answer (DeferredReader: consecutive ranges). It serves each range from memory
   * while the content is there; from its first range read from the file on, it reads only from
   * that file, hashing everything read from it, and checks the digest before handing out the
   * range that ends the content, so an answer from a bad file never reaches its last byte (the
   * file is then dropped, fileFailed). A reader that switched mid-answer hashes the part it sent
   * from memory by reading it from the file as it goes (CATCH_UP_FACTOR; what it sends from the
   * file meanwhile is hashed when read again, so a file changed and changed back in between goes
   * unnoticed). While it is open a removal of the content leaves the content's bytes and file to it.
   */
  private openReader(entry: StoredContent): DeferredReader {
    if (entry.removed) throw this.unreadable(entry);
    entry.readers++;
    let released = false;
    let failed: string | undefined;
    let position = 0;
    let file: FileHandle | undefined;
    let hash: Hash | undefined;
    let hashed = 0;
    let catchUp: Buffer | undefined;
    const fromFile = (from: FileHandle, digest: Hash, offset: number, out: Buffer): void => {
      const last = offset + out.length === entry.byteLength;
      let budget = last ? Infinity : CATCH_UP_FACTOR * Math.max(out.length, 1);
      while (hashed < offset && budget > 0) {
        const n = Math.min(offset - hashed, CATCH_UP_READ_BYTES, budget);
        const piece = (catchUp ??= Buffer.allocUnsafeSlow(CATCH_UP_READ_BYTES)).subarray(0, n);
        readRange(from, piece, hashed, entry.byteLength);
        digest.update(piece);
        hashed += n;
        budget -= n;
      }
      readRange(from, out, offset, entry.byteLength);
      if (hashed === offset) {
        digest.update(out);
        hashed += out.length;
      }
      if (!last) return;
      hash = undefined;
      const got = digest.digest("hex");
      if (got !== entry.digest) throw new Error(`the bytes read have digest ${got.slice(0, 16)}…`);
    };
    return {
      slice: (offset, length, into) => {
        if (released) throw this.unreadable(entry, "its reader was released");
        if (failed !== undefined) throw this.unreadable(entry, failed);
        if (offset !== position || length < 0 || offset + length > entry.byteLength)
          throw new RangeError(`read of ${length} bytes at ${offset}, expected the range at ${position}`);
        if (file === undefined) {
          const inMemory = entry.held ?? this.liveCopy(entry);
          if (inMemory !== undefined) {
            position += length;
            return inMemory.encoded.subarray(offset, offset + length);
          }
          if (entry.file === undefined) throw this.unreadable(entry);
          file = entry.file;
          hash = createHash("sha256");
        }
        const out = into?.subarray(0, length) ?? Buffer.allocUnsafeSlow(length);
        // Checked already (a last empty range asked for again).
        if (hash === undefined) return out;
        const view = Buffer.from(out.buffer, out.byteOffset, length);
        try {
          fromFile(file, hash, offset, view);
        } catch (err) {
          failed = errorMessage(err);
          this.fileFailed(entry, file, err);
          throw this.unreadable(entry, failed);
        }
        position += length;
        return out;
      },
      release: () => {
        if (released) return;
        released = true;
        catchUp = undefined;
        entry.readers--;
        if (entry.readers === 0 && entry.removed) this.drop(entry);
      },
    };
  }

  private liveCopy(entry: StoredContent): SharedContent | undefined {
    return this.alwaysReadBack ? undefined : entry.recent?.deref();
  }

  /** Drops the state's hold on a delivered large content, writing its spill file first. */
  private maybeSpill(entry: StoredContent): void {
    const held = entry.held;
    if (held === undefined || entry.undelivered > 0 || entry.byteLength < this.minBytes) return;
    if (entry.file !== undefined) {
      // On disk already (spilled before, then used again): nothing to write.
      entry.recent = new WeakRef(held);
      delete entry.held;
      return;
    }
    if (entry.spilling || entry.spillFailed || this.closed) return;
    entry.spilling = true;
    const write = this.write(held.encoded).then(
      (file) => {
        entry.spilling = false;
        if (entry.removed) {
          closeQuietly(file);
          return;
        }
        entry.file = file;
        this.maybeSpill(entry);
        this.logger?.debug(
          { event: "state.shared-content-spilled", digest: entry.digest, bytes: entry.byteLength },
          `Shared content ${entry.digest.slice(0, 16)}… (${entry.byteLength} bytes) delivered: kept in its spill file`,
        );
      },
      (err: unknown) => {
        entry.spilling = false;
        entry.spillFailed = true;
        const message =
          `Shared content ${entry.digest.slice(0, 16)}… (${entry.byteLength} bytes) stays in memory: ` +
          `writing its spill file in ${this.dir} failed (${errorMessage(err)})`;
        if (this.spillFailureLogged) this.logger?.debug({ event: "state.shared-content-spill-failed" }, message);
        else this.logger?.warn({ event: "state.shared-content-spill-failed", err }, message);
        this.spillFailureLogged = true;
      },
    );
    this.pending.add(write);
    void write.finally(() => this.pending.delete(write));
  }

  private async write(encoded: Uint8Array): Promise<FileHandle> {
    const file = await openUnlinkedFile(this.dir, "flwr-shared-content-");
    try {
      await writeAll(file, encoded, 0);
      return file;
    } catch (err) {
      closeQuietly(file);
      throw err;
    }
  }

  private readBack(entry: StoredContent, file: FileHandle): SharedContent {
    const encoded = Buffer.allocUnsafeSlow(entry.byteLength);
    readRange(file, encoded, 0, entry.byteLength);
    const digest = contentDigest(encoded);
    if (digest !== entry.digest) throw new Error(`the bytes read back have digest ${digest.slice(0, 16)}…`);
    return { digest, encoded, recordset: RecordSet.decode(encoded) };
  }
}
