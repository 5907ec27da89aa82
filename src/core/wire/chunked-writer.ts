/**
 * A protobuf writer for large messages that copies payload bytes once.
 *
 * ts-proto's generated `encode(message, writer)` drives a BinaryWriter; the stock one writes
 * nested messages into a growing buffer and, on every `join()`, shifts the nested content to
 * widen its length prefix, then `finish()` slices (copies) it again. A 100 MB tensor nested six
 * levels deep (TaskIns > Task > RecordSet > entry > ParametersRecord > Array) is copied about a
 * dozen times. ChunkedWriter keeps each nested message as a list of chunks instead: scalars go
 * through an inner stock BinaryWriter (so every varint, zigzag, double and UTF-8 string is
 * encoded by the same code as before), large `bytes` values are kept by reference, a `join()`
 * only writes the length prefix and links the child's chunks, and `finish()` copies everything
 * once into a single Buffer (with spare bytes in front when large, see `withHeadroom`). The
 * generated `encode` decides which fields are written and in which order, so the bytes are
 * exactly those of `X.encode(m).finish()`.
 *
 * Use it through `encodeMessage(X, message)` (or, as the canonical encoder does, write and
 * `finish()` in one synchronous step): the referenced `bytes` values are read only during
 * `finish()`, so they must not change before it.
 */
import { BinaryWriter, type WireType } from "@bufbuild/protobuf/wire";

/** `bytes` values at least this long are referenced rather than copied into the scratch buffer. */
const REFERENCE_THRESHOLD = 1024;

/**
 * Spare bytes in front of every large output of `finish()`, so that a transport can prefix its
 * own frame header (gRPC's is 5 bytes) in place instead of copying the whole message again.
 */
export const HEADROOM_BYTES = 8;
/** Outputs shorter than this get no headroom: copying them again costs little. */
const HEADROOM_MIN_LENGTH = 64 * 1024;
/** Where each output with headroom sits in its own ArrayBuffer. */
const outputsWithHeadroom = new WeakMap<ArrayBufferLike, { offset: number; length: number }>();

/**
 * For a large output of `finish()` (or any view of exactly its bytes): a Buffer that starts
 * `extra` bytes earlier, in the reserved headroom, and ends where the output ends; the caller
 * fills those bytes. Undefined for anything else, which the caller must then copy.
 */
export function withHeadroom(output: Uint8Array, extra: number): Buffer | undefined {
  const at = outputsWithHeadroom.get(output.buffer);
  if (at === undefined || at.offset !== output.byteOffset || at.length !== output.byteLength) return undefined;
  if (extra < 0 || extra > Math.min(HEADROOM_BYTES, output.byteOffset)) return undefined;
  return Buffer.from(output.buffer, output.byteOffset - extra, output.byteLength + extra);
}

interface Frame {
  chunks: Uint8Array[];
  length: number;
}

/**
 * Bytes that are not in memory (a delivered broadcast spilled to disk, src/state/content-spill.ts),
 * read a piece at a time when written out.
 */
export interface DeferredBytes {
  byteLength: number;
  /**
   * Bytes [offset, offset + length): a view of memory, or a copy, made into `into` (`length`
   * bytes) when given. Throws when they cannot be read.
   */
  slice(offset: number, length: number, into?: Uint8Array): Uint8Array;
  /**
   * A reader for one write of all the bytes, when the source wants one (content-spill.ts: it
   * checks the digest of what it reads and keeps its file open meanwhile). Writers that have it
   * use it instead of `slice`: consecutive ranges from 0, then `release()`.
   */
  open?(): DeferredReader;
}

/** One writer's pass over deferred bytes (DeferredBytes.open). */
export interface DeferredReader {
  /**
   * As DeferredBytes.slice, for consecutive ranges from 0; throws when the bytes cannot be read
   * or, at the range that ends them, when what was read is not what they are.
   */
  slice(offset: number, length: number, into?: Uint8Array): Uint8Array;
  /** Called exactly once, whether the write completed, failed or was abandoned. */
  release(): void;
}

/** Empty stand-ins for deferred bytes in a chunk list, and what they stand for. */
const deferredStandIns = new WeakMap<Uint8Array, DeferredBytes>();

/**
 * The deferred bytes a chunk of `finishChunks()` stands for (its own length is 0), or undefined
 * for an ordinary chunk. A transport writing the list must read these (`slice`) as it goes.
 */
export function deferredChunkOf(chunk: Uint8Array): DeferredBytes | undefined {
  return chunk.byteLength === 0 ? deferredStandIns.get(chunk) : undefined;
}

/** The length a chunk of `finishChunks()` contributes: its own, or that of the bytes it stands for. */
export function chunkLength(chunk: Uint8Array): number {
  return deferredChunkOf(chunk)?.byteLength ?? chunk.byteLength;
}

/** Copies `chunk` (reading it, if deferred) into `out` at `pos`; returns its length. */
function copyChunk(chunk: Uint8Array, out: Uint8Array, pos: number): number {
  const deferred = deferredChunkOf(chunk);
  if (deferred === undefined) {
    out.set(chunk, pos);
    return chunk.length;
  }
  const reader = deferred.open?.();
  try {
    out.set((reader ?? deferred).slice(0, deferred.byteLength), pos);
  } finally {
    reader?.release();
  }
  return deferred.byteLength;
}

/** An encoded message as consecutive chunks; `length` is their total. */
export interface EncodedChunks {
  chunks: Uint8Array[];
  length: number;
}

/** What ts-proto generates for every message: `X.encode(message, writer?)`. */
export interface MessageEncoder<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
}

/**
 * Drop-in BinaryWriter for ts-proto's generated `encode` (same method set). Not reusable across
 * threads of work: one writer per message, finished once.
 */
export class ChunkedWriter {
  /** Scalars and small fields of the current run of bytes, cut into a chunk before any link. */
  private readonly scratch = new BinaryWriter();
  private scratchDirty = false;
  private current: Frame = { chunks: [], length: 0 };
  private readonly stack: Frame[] = [];

  /** Moves what the scratch writer holds into the current frame (one small copy). */
  private cut(): void {
    if (!this.scratchDirty) return;
    const bytes = this.scratch.finish();
    this.scratchDirty = false;
    if (bytes.length === 0) return;
    this.current.chunks.push(bytes);
    this.current.length += bytes.length;
  }

  private small(): BinaryWriter {
    this.scratchDirty = true;
    return this.scratch;
  }

  /** Starts a length-delimited part (nested message or packed repeated field). */
  fork(): this {
    this.cut();
    this.stack.push(this.current);
    this.current = { chunks: [], length: 0 };
    return this;
  }

  /** Ends the last fork: writes its length prefix into the parent and links its chunks. */
  join(): this {
    this.cut();
    const parent = this.stack.pop();
    if (parent === undefined) throw new Error("invalid state, fork stack empty");
    const child = this.current;
    this.current = parent;
    this.small().uint32(child.length);
    this.cut();
    for (const chunk of child.chunks) parent.chunks.push(chunk);
    parent.length += child.length;
    return this;
  }

  /** Takes everything written (the writer is empty afterwards); refuses an unjoined fork. */
  private takeAll(): Frame {
    this.cut();
    if (this.stack.length !== 0) throw new Error("invalid state, unjoined fork");
    const all = this.current;
    this.current = { chunks: [], length: 0 };
    return all;
  }

  /** All bytes written, in one new Buffer; the writer is empty afterwards. */
  finish(): Buffer {
    const { chunks, length } = this.takeAll();
    const only = chunks[0];
    // A lone chunk always comes from the scratch writer (a referenced value is preceded by
    // its tag and length), so it is ours and needs no copy.
    if (chunks.length === 1 && only !== undefined) return Buffer.from(only.buffer, only.byteOffset, only.byteLength);
    const out = length < HEADROOM_MIN_LENGTH ? Buffer.allocUnsafe(length) : allocateWithHeadroom(length);
    let pos = 0;
    for (const chunk of chunks) pos += copyChunk(chunk, out, pos);
    return out;
  }

  /**
   * All bytes written, as a list of chunks without copying the referenced `bytes` values (runs
   * of small chunks are joined): for a transport that writes the list as is. The referenced
   * values must not change until it has been written. The writer is empty afterwards.
   */
  finishChunks(): EncodedChunks {
    const { chunks, length } = this.takeAll();
    const out: Uint8Array[] = [];
    let run: Uint8Array[] = [];
    let runLength = 0;
    const endRun = (): void => {
      if (run.length === 1) out.push(run[0]!);
      else if (run.length > 1) out.push(Buffer.concat(run, runLength));
      run = [];
      runLength = 0;
    };
    for (const chunk of chunks) {
      if (chunk.length >= REFERENCE_THRESHOLD || deferredChunkOf(chunk) !== undefined) {
        endRun();
        out.push(chunk);
      } else {
        run.push(chunk);
        runLength += chunk.length;
      }
    }
    endRun();
    return { chunks: out, length };
  }

  bytes(value: Uint8Array): this {
    if (value.length < REFERENCE_THRESHOLD) {
      this.small().bytes(value);
      return this;
    }
    this.small().uint32(value.length);
    this.cut();
    this.current.chunks.push(value);
    this.current.length += value.length;
    return this;
  }

  /**
   * A `bytes` value (length prefix, then the bytes) whose bytes are read only when written out:
   * `finish()` reads them, `finishChunks()` lists a stand-in (deferredChunkOf).
   */
  deferredBytes(value: DeferredBytes): this {
    this.small().uint32(value.byteLength);
    this.cut();
    const standIn = new Uint8Array(0);
    deferredStandIns.set(standIn, value);
    this.current.chunks.push(standIn);
    this.current.length += value.byteLength;
    return this;
  }

  raw(chunk: Uint8Array): this {
    this.small().raw(chunk);
    return this;
  }

  tag(fieldNo: number, type: WireType): this {
    this.small().tag(fieldNo, type);
    return this;
  }

  uint32(value: number): this {
    this.small().uint32(value);
    return this;
  }

  int32(value: number): this {
    this.small().int32(value);
    return this;
  }

  bool(value: boolean): this {
    this.small().bool(value);
    return this;
  }

  string(value: string): this {
    this.small().string(value);
    return this;
  }

  float(value: number): this {
    this.small().float(value);
    return this;
  }

  double(value: number): this {
    this.small().double(value);
    return this;
  }

  fixed32(value: number): this {
    this.small().fixed32(value);
    return this;
  }

  sfixed32(value: number): this {
    this.small().sfixed32(value);
    return this;
  }

  sint32(value: number): this {
    this.small().sint32(value);
    return this;
  }

  sfixed64(value: string | number | bigint): this {
    this.small().sfixed64(value);
    return this;
  }

  fixed64(value: string | number | bigint): this {
    this.small().fixed64(value);
    return this;
  }

  int64(value: string | number | bigint): this {
    this.small().int64(value);
    return this;
  }

  sint64(value: string | number | bigint): this {
    this.small().sint64(value);
    return this;
  }

  uint64(value: string | number | bigint): this {
    this.small().uint64(value);
    return this;
  }
}

/** The bytes of `encoded` in one Buffer: a view of its only chunk, else a joined copy. */
export function joinChunks(encoded: EncodedChunks): Buffer {
  const only = encoded.chunks[0];
  if (encoded.chunks.length === 1 && only !== undefined && deferredChunkOf(only) === undefined)
    return Buffer.from(only.buffer, only.byteOffset, only.byteLength);
  const out = Buffer.allocUnsafe(encoded.length);
  let pos = 0;
  for (const chunk of encoded.chunks) pos += copyChunk(chunk, out, pos);
  return out;
}

/** A Buffer of `length` bytes with HEADROOM_BYTES before it in its own (unpooled) ArrayBuffer. */
function allocateWithHeadroom(length: number): Buffer {
  const out = Buffer.allocUnsafeSlow(HEADROOM_BYTES + length).subarray(HEADROOM_BYTES);
  outputsWithHeadroom.set(out.buffer, { offset: out.byteOffset, length });
  return out;
}

/**
 * `Buffer.from(X.encode(message).finish())`, byte for byte, with payload bytes copied once.
 * Worth it for messages that may carry large `bytes` fields (tasks with records).
 */
export function encodeMessage<T>(encoder: MessageEncoder<T>, message: T): Buffer {
  const writer = new ChunkedWriter();
  encoder.encode(message, writer as unknown as BinaryWriter);
  return writer.finish();
}

/**
 * The bytes of `encodeMessage(encoder, message)` as chunks, with payload bytes not copied at all
 * (they are referenced): for a transport that can write a list of buffers. `message` must not
 * change until the chunks are written.
 */
export function encodeMessageChunks<T>(encoder: MessageEncoder<T>, message: T): EncodedChunks {
  const writer = new ChunkedWriter();
  encoder.encode(message, writer as unknown as BinaryWriter);
  return writer.finishChunks();
}
