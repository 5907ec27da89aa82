/**
 * Identifiers the SuperLink hands out: random signed 64-bit run/node ids (Flower's
 * `generate_rand_int_from_bytes(8)`) and uuid4 task ids.
 */
import { randomBytes, randomUUID } from "node:crypto";

/** Source of random bytes; injectable so tests can force a zero draw. */
export type RandomBytesSource = (size: number) => Uint8Array;

const defaultSource: RandomBytesSource = (size) => randomBytes(size);

/**
 * A random non-zero signed 64-bit integer: 8 random bytes read as little-endian two's
 * complement, so the full int64 range (about half negative, most beyond 2^53) is possible.
 * 0 is redrawn because Flower reserves it for "none/failure" and for the Driver's anonymous node.
 */
export function randomId(source: RandomBytesSource = defaultSource): bigint {
  for (;;) {
    const bytes = source(8);
    if (bytes.length !== 8) throw new RangeError(`random source returned ${bytes.length} bytes, expected 8`);
    const id = Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigInt64LE(0);
    if (id !== 0n) return id;
  }
}

/** A fresh random uuid4 in lowercase 8-4-4-4-12 form, like Python's `str(uuid4())`. */
export function uuid4(): string {
  return randomUUID();
}
