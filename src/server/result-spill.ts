/**
 * Large training results, kept out of memory until the strategy aggregates them.
 *
 * Flower's default FedAvg weighs each result by n_i / total before adding it, so no result can
 * be folded in before every result of the round is in; holding them all in memory made a
 * ServerApp with 10 results of 100 MB peak at 2.3 GB. Instead, each large result's array bytes
 * are written to an unlinked temp file as the result arrives and the received message is
 * dropped; the built-in strategies then read the arrays back in chunks (ArraySource), in the
 * same order and with the same arithmetic as before, so the aggregate is bit-identical.
 * Anything else that reads `parameters.tensors` of a spilled result gets the same .npy bytes
 * back, rebuilt from the file.
 */
import type { FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { MalformedMessageError, RoundFailedError } from "../core/errors";
import { openUnlinkedFile, readFullySync, writeAllSync } from "../core/unlinked-file";
import type { Parameters } from "../core/records/legacy-types";
import { type NpyLayout, allocateNpy, npyDataIsNative, npyToNdarray, readNpyLayout } from "../core/records/npy";
import type { DType } from "../core/records/types";
import { type ArraySource, CHUNK_ELEMENTS, arraySource } from "./strategy/aggregate";

/** Where a spilled array's elements are: native byte order, C order. */
interface SpilledArray {
  dtype: DType;
  shape: number[];
  count: number;
  /** Byte offset in the spill file. */
  offset: number;
  byteLength: number;
}

interface SpilledEntry {
  spill: ResultSpill;
  arrays: SpilledArray[];
}

const spilled = new WeakMap<Parameters, SpilledEntry>();

const ITEM_SIZE: Record<DType, number> = {
  float32: 4,
  float64: 8,
  int8: 1,
  uint8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  bool: 1,
};

type TypedView = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => ArrayLike<number> | BigInt64Array;
const VIEW: Record<DType, TypedView> = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  bool: Uint8Array,
};

function asNumbers(view: ArrayLike<number> | BigInt64Array): ArrayLike<number> {
  return view instanceof BigInt64Array ? Array.from(view, (v) => Number(v)) : view;
}

/**
 * The buffer one result's sources read chunks into. The aggregation reads one array of a
 * result at a time and uses each chunk before that result's next read, so all arrays of a
 * result can share it: one chunk per result, not one per array (which, for 50 arrays of 10
 * results, held 500 MiB).
 */
class Scratch {
  private buffer: ArrayBuffer | undefined;

  get(bytes: number): ArrayBuffer {
    if (this.buffer === undefined || this.buffer.byteLength < bytes)
      this.buffer = new ArrayBuffer(Math.max(bytes, CHUNK_ELEMENTS * 8));
    return this.buffer;
  }
}

/** A source over native-order elements whose bytes `readBytes(byteOffset, into)` copies out. */
function copyingSource(
  dtype: DType,
  shape: number[],
  count: number,
  scratch: Scratch,
  readBytes: (byteOffset: number, into: Uint8Array) => void,
): ArraySource {
  const itemSize = ITEM_SIZE[dtype];
  return {
    dtype,
    shape,
    length: count,
    read(start, n) {
      const buffer = scratch.get(n * itemSize);
      readBytes(start * itemSize, new Uint8Array(buffer, 0, n * itemSize));
      return asNumbers(new VIEW[dtype](buffer, 0, n));
    },
  };
}

/** A source over the data of `.npy` bytes in memory, without decoding the whole array first. */
function npySource(tensor: Uint8Array, layout: NpyLayout, scratch: Scratch): ArraySource {
  const { dtype, shape, count, dataStart } = layout;
  const itemSize = ITEM_SIZE[dtype];
  const base = tensor.byteOffset + dataStart;
  if (base % itemSize === 0) {
    // Aligned: read straight from the received bytes.
    return {
      dtype,
      shape,
      length: count,
      read: (start, n) => asNumbers(new VIEW[dtype](tensor.buffer, base + start * itemSize, n)),
    };
  }
  return copyingSource(dtype, shape, count, scratch, (byteOffset, into) => {
    into.set(tensor.subarray(dataStart + byteOffset, dataStart + byteOffset + into.length));
  });
}

/**
 * The arrays of `p` as sources for the aggregation functions: a spilled result's are read from
 * its file, others from their .npy bytes (decoded whole only when not in native order). Throws
 * MalformedMessageError for a tensor that does not parse, as parametersToNdarrays does.
 */
export function arraySourcesOf(p: Parameters): ArraySource[] {
  const scratch = new Scratch();
  const entry = spilled.get(p);
  if (entry !== undefined) return entry.arrays.map((a) => entry.spill.source(a, scratch));
  return p.tensors.map((tensor, index) => {
    const layout = layoutOf(p, tensor, index);
    return npyDataIsNative(layout) ? npySource(tensor, layout, scratch) : arraySource(npyToNdarray(tensor));
  });
}

/** readNpyLayout, failing as parametersToNdarrays does (naming the tensor). */
function layoutOf(p: Parameters, tensor: Uint8Array, index: number): NpyLayout {
  try {
    return readNpyLayout(tensor);
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new MalformedMessageError(`Parameters tensor ${index} (tensorType "${p.tensorType}"): ${why}`, { cause });
  }
}

/**
 * "float32[3,2] float32[2]": the dtype and shape of every array of `p` (what must match for
 * results to be aggregated together), from the .npy headers alone. Throws MalformedMessageError
 * for a tensor that would not decode.
 */
export function parametersSignature(p: Parameters): string {
  const entry = spilled.get(p);
  const arrays = entry !== undefined ? entry.arrays : p.tensors.map((t, index) => layoutOf(p, t, index));
  return arrays.map((a) => `${a.dtype}[${a.shape.join(",")}]`).join(" ");
}

/** Total bytes of `p`'s tensors. */
export function parametersBytes(p: Parameters): number {
  return p.tensors.reduce((n, t) => n + t.byteLength, 0);
}

/**
 * One round's spill file: created on the first `keep`, unlinked at once (only this process can
 * reach it, and nothing is left behind if it dies), closed by `close`.
 */
export class ResultSpill {
  private handle: FileHandle | undefined;
  private opening: Promise<FileHandle> | undefined;
  private size = 0;
  private closed = false;

  constructor(private readonly dir: string = tmpdir()) {}

  /**
   * Writes the arrays of `p` to the file and returns Parameters that read them from there (the
   * caller drops `p`, and with it the received bytes). A tensor that is not plain native-order
   * .npy (undecodable, big-endian, Fortran order, bool) leaves `p` as it is, in memory.
   */
  async keep(p: Parameters): Promise<Parameters> {
    const layouts: NpyLayout[] = [];
    for (const tensor of p.tensors) {
      let layout: NpyLayout;
      try {
        layout = readNpyLayout(tensor);
      } catch {
        return p;
      }
      if (!npyDataIsNative(layout)) return p;
      layouts.push(layout);
    }
    const handle = await this.file();
    const arrays: SpilledArray[] = layouts.map((layout) => {
      const offset = this.size;
      this.size += layout.dataBytes;
      return { dtype: layout.dtype, shape: layout.shape, count: layout.count, offset, byteLength: layout.dataBytes };
    });
    // Synchronous: the received bytes are written out (and can be collected) before this process
    // reads anything more from the network, so a result that arrives next is never received while
    // this one is still held. Asynchronous writes of 100 MB took 0.2-2 s on a loaded machine,
    // with the next result arriving meanwhile; a synchronous one is one copy into the page cache.
    p.tensors.forEach((tensor, i) => {
      writeAllSync(handle.fd, tensor.subarray(layouts[i]!.dataStart), arrays[i]!.offset);
    });
    const npyBytes = (a: SpilledArray): Uint8Array => this.npyBytes(a);
    const kept: Parameters = {
      tensorType: p.tensorType,
      // Rebuilt on every read: whoever asks holds the copy, the spill holds none.
      get tensors(): Uint8Array[] {
        return arrays.map(npyBytes);
      },
    };
    spilled.set(kept, { spill: this, arrays });
    return kept;
  }

  /** Releases the file. Spilled results cannot be read afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const handle = this.handle ?? (this.opening ? await this.opening.catch(() => undefined) : undefined);
    this.handle = undefined;
    await handle?.close();
  }

  /** A chunked reader of one spilled array, reading into `scratch`. */
  source(a: SpilledArray, scratch: Scratch): ArraySource {
    return copyingSource(a.dtype, a.shape, a.count, scratch, (byteOffset, into) => {
      this.readAt(a.offset + byteOffset, into);
    });
  }

  private npyBytes(a: SpilledArray): Uint8Array {
    const { bytes, data } = allocateNpy(a.dtype, a.shape);
    this.readAt(a.offset, new Uint8Array(data.buffer, data.byteOffset, a.byteLength));
    return bytes;
  }

  private readAt(position: number, into: Uint8Array): void {
    if (this.closed || this.handle === undefined) {
      throw new RoundFailedError(
        "a spilled training result was read after its round ended (keep copies, not the results)",
      );
    }
    if (readFullySync(this.handle.fd, into, position) < into.length)
      throw new RoundFailedError("the spill file of training results is shorter than what was written to it");
  }

  private async file(): Promise<FileHandle> {
    if (this.closed) throw new RoundFailedError("the round's result spill is closed");
    if (this.handle !== undefined) return this.handle;
    this.opening ??= openUnlinkedFile(this.dir, "flwr-fit-results-");
    this.handle = await this.opening;
    return this.handle;
  }
}
