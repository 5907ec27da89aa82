import { randomId, uuid4 } from "../../src/state/ids";
import { UUID4 } from "./state.conformance";

/** A byte source that plays back the given draws in order. */
function scripted(...draws: number[][]): (size: number) => Uint8Array {
  const queue = [...draws];
  return (size) => {
    const next = queue.shift();
    if (next === undefined) throw new Error("no more scripted draws");
    expect(size).toBe(8);
    return Uint8Array.from(next);
  };
}

describe("randomId", () => {
  test("reads 8 bytes as a little-endian signed 64-bit integer", () => {
    expect(randomId(scripted([1, 0, 0, 0, 0, 0, 0, 0]))).toBe(1n);
    expect(randomId(scripted([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))).toBe(-1n);
    expect(randomId(scripted([0, 0, 0, 0, 0, 0, 0, 0x80]))).toBe(-(2n ** 63n));
    expect(randomId(scripted([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]))).toBe(2n ** 63n - 1n);
    expect(randomId(scripted([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]))).toBe(0x0807060504030201n);
  });

  test("redraws 0, which means 'none' in Flower", () => {
    const zero = [0, 0, 0, 0, 0, 0, 0, 0];
    expect(randomId(scripted(zero, zero, [2, 0, 0, 0, 0, 0, 0, 0]))).toBe(2n);
  });

  test("reads a view at an offset correctly", () => {
    const backing = Uint8Array.from([9, 9, 3, 0, 0, 0, 0, 0, 0, 0]);
    expect(randomId(() => backing.subarray(2, 10))).toBe(3n);
  });

  test("a source returning the wrong length is an error, not a short id", () => {
    expect(() => randomId(() => new Uint8Array(4))).toThrow(RangeError);
  });

  test("default draws are distinct non-zero int64 values", () => {
    const ids = Array.from({ length: 64 }, () => randomId());
    expect(new Set(ids).size).toBe(64);
    for (const id of ids) expect(id !== 0n && id >= -(2n ** 63n) && id < 2n ** 63n).toBe(true);
  });
});

describe("uuid4", () => {
  test("is a fresh lowercase version-4 uuid", () => {
    const a = uuid4();
    expect(a).toMatch(UUID4);
    expect(uuid4()).not.toBe(a);
  });
});
