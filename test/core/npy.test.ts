/**
 * The .npy codec against bytes written by real NumPy (2.4.6, `np.save(allow_pickle=False)`;
 * versions 2.0/3.0 via `numpy.lib.format.write_array(version=...)`), plus the .npy inside the 511-byte PushTaskResRequest vector (test/core/spec-vectors.ts).
 */
import { MalformedMessageError } from "../../src/core/errors";
import { ndarrayToNpy, npyToNdarray } from "../../src/core/records/npy";
import type { NDArray } from "../../src/core/records/types";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const bytes = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));

/** The .npy inside the 511-byte PushTaskResRequest (float32 [1.5, -2.0]). */
const SPEC_FLOAT32 =
  "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d" +
  "2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000c03f000000c0";

/** Written by NumPy from C-order, little-endian arrays; we must produce the same bytes. */
const NUMPY_WRITTEN: Array<[string, NDArray, string]> = [
  [
    "float64 (2, 3)",
    { dtype: "float64", shape: [2, 3], data: new Float64Array([-1, -0.5, 0, 0.5, 1, 1.5]) },
    "934e554d5059010076007b276465736372273a20273c6638272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000000000000f0bf000000000000e0bf0000000000000000000000000000e03f000000000000f03f000000000000f83f",
  ],
  [
    "int8",
    { dtype: "int8", shape: [3], data: new Int8Array([-128, 0, 127]) },
    "934e554d5059010076007b276465736372273a20277c6931272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a80007f",
  ],
  [
    "uint8",
    { dtype: "uint8", shape: [3], data: new Uint8Array([0, 255, 7]) },
    "934e554d5059010076007b276465736372273a20277c7531272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a00ff07",
  ],
  [
    "int16",
    { dtype: "int16", shape: [3], data: new Int16Array([1, -2, 300]) },
    "934e554d5059010076007b276465736372273a20273c6932272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0100feff2c01",
  ],
  [
    "int32 scalar (shape ())",
    { dtype: "int32", shape: [], data: new Int32Array([7]) },
    "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a07000000",
  ],
  [
    "int64 extremes",
    { dtype: "int64", shape: [3], data: new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 1n]) },
    "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000000000000080ffffffffffffff7f0100000000000000",
  ],
  [
    "bool",
    { dtype: "bool", shape: [3], data: new Uint8Array([1, 0, 1]) },
    "934e554d5059010076007b276465736372273a20277c6231272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a010001",
  ],
  [
    "float32 (0,)",
    { dtype: "float32", shape: [0], data: new Float32Array(0) },
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028302c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a",
  ],
  [
    "float32 (3, 0)",
    { dtype: "float32", shape: [3, 0], data: new Float32Array(0) },
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c2030292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a",
  ],
  [
    "float32 with 30 axes (192-byte preamble)",
    { dtype: "float32", shape: new Array<number>(30).fill(1), data: new Float32Array([1]) },
    "934e554d50590100b6007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c20312c2031292c207d20202020202020202020202020202020202020202020202020202020202020202020202020200a0000803f",
  ],
];

describe("ndarrayToNpy", () => {
  test("matches the upb vector byte for byte (128-byte preamble)", () => {
    const out = ndarrayToNpy({ dtype: "float32", shape: [2], data: new Float32Array([1.5, -2.0]) });
    expect(hex(out)).toBe(SPEC_FLOAT32);
    expect(out.length).toBe(136);
  });

  test.each(NUMPY_WRITTEN)("matches np.save for %s", (_name, array, expected) => {
    expect(hex(ndarrayToNpy(array))).toBe(expected);
  });

  test("the preamble grows in 64-byte steps exactly where NumPy's does", () => {
    // NumPy 2.4.6: ranks 1-14 -> 128 bytes, 15-35 -> 192, 36+ -> 256 (uint8 arrays of ones).
    const preamble = (rank: number): number =>
      ndarrayToNpy({ dtype: "uint8", shape: new Array<number>(rank).fill(1), data: new Uint8Array([1]) }).length - 1;
    expect([1, 14, 15, 35, 36].map(preamble)).toEqual([128, 128, 192, 192, 256]);
  });

  test("writes the C-order data of a typed-array view, not its whole buffer", () => {
    const backing = new Float32Array([9, 1.5, -2, 9]);
    const view = backing.subarray(1, 3);
    expect(hex(ndarrayToNpy({ dtype: "float32", shape: [2], data: view }))).toBe(SPEC_FLOAT32);
  });

  test("normalizes bool bytes to 0/1 as numpy stores them", () => {
    const out = ndarrayToNpy({ dtype: "bool", shape: [2], data: new Uint8Array([0, 7]) });
    expect([...out.subarray(128)]).toEqual([0, 1]);
  });

  test("rejects a shape that does not match the data length", () => {
    expect(() => ndarrayToNpy({ dtype: "float32", shape: [3], data: new Float32Array(2) })).toThrow(
      MalformedMessageError,
    );
    expect(() => ndarrayToNpy({ dtype: "float32", shape: [-1], data: new Float32Array(0) })).toThrow(
      /invalid axis length/,
    );
  });

  test("rejects a typed array of the wrong kind for the dtype", () => {
    const wrong = { dtype: "float32", shape: [2], data: new Float64Array(2) } as unknown as NDArray;
    expect(() => ndarrayToNpy(wrong)).toThrow(/needs a Float32Array, got Float64Array/);
    const unknown = { dtype: "float16", shape: [1], data: new Uint16Array(1) } as unknown as NDArray;
    expect(() => ndarrayToNpy(unknown)).toThrow(/unsupported dtype "float16"/);
  });
});

describe("npyToNdarray", () => {
  test("reads the upb vector", () => {
    const a = npyToNdarray(bytes(SPEC_FLOAT32));
    expect(a.dtype).toBe("float32");
    expect(a.shape).toEqual([2]);
    expect(a.data).toEqual(new Float32Array([1.5, -2]));
  });

  test.each(NUMPY_WRITTEN)("round-trips NumPy's bytes for %s", (_name, array, numpyHex) => {
    const decoded = npyToNdarray(bytes(numpyHex));
    expect(decoded).toEqual(array);
    expect(hex(ndarrayToNpy(decoded))).toBe(numpyHex);
  });

  test("copies the data, so the result is aligned and independent of the input buffer", () => {
    // Place the .npy at an odd offset, as it sits inside a decoded protobuf message.
    const shifted = new Uint8Array(1 + SPEC_FLOAT32.length / 2);
    shifted.set(bytes(SPEC_FLOAT32), 1);
    const input = Buffer.from(shifted.buffer, 1);
    const a = npyToNdarray(input);
    input[128] = 0xff;
    expect(a.data).toEqual(new Float32Array([1.5, -2]));
  });

  test("reads big-endian data", () => {
    const a = npyToNdarray(
      bytes(
        "934e554d5059010076007b276465736372273a20273e6932272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0001fffe012c",
      ),
    );
    expect(a).toEqual({ dtype: "int16", shape: [3], data: new Int16Array([1, -2, 300]) });
  });

  test("converts fortran_order True to C order", () => {
    // np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    const a = npyToNdarray(
      bytes(
        "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a20547275652c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000000000300000001000000040000000200000005000000",
      ),
    );
    expect(a).toEqual({ dtype: "int32", shape: [2, 3], data: new Int32Array([0, 1, 2, 3, 4, 5]) });
  });

  test("converts big-endian, Fortran-order, 3-D data", () => {
    // np.asfortranarray(np.arange(24, dtype='>f8').reshape(2, 3, 4))
    const a = npyToNdarray(
      bytes(
        "934e554d5059010076007b276465736372273a20273e6638272c2027666f727472616e5f6f72646572273a20547275652c20277368617065273a2028322c20332c2034292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000000000000000402800000000000040100000000000004030000000000000402000000000000040340000000000003ff0000000000000402a00000000000040140000000000004031000000000000402200000000000040350000000000004000000000000000402c00000000000040180000000000004032000000000000402400000000000040360000000000004008000000000000402e000000000000401c000000000000403300000000000040260000000000004037000000000000",
      ),
    );
    expect(a.dtype).toBe("float64");
    expect(a.shape).toEqual([2, 3, 4]);
    expect([...a.data]).toEqual(Array.from({ length: 24 }, (_, i) => i));
  });

  test("reads format versions 2.0 and 3.0", () => {
    const v2 =
      "934e554d50590200740000007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000c03f000000c0";
    const v3 = "934e554d50590300" + v2.slice(16);
    for (const h of [v2, v3]) {
      expect(npyToNdarray(bytes(h))).toEqual({ dtype: "float32", shape: [2], data: new Float32Array([1.5, -2]) });
    }
  });

  test("accepts any header length and other writers' spellings", () => {
    const build = (header: string, data: number[], version = 1): Uint8Array => {
      const h = Buffer.from(header, version === 3 ? "utf8" : "latin1");
      const prefix = version === 1 ? Buffer.alloc(10) : Buffer.alloc(12);
      Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(prefix);
      if (version === 1) prefix.writeUInt16LE(h.length, 8);
      else prefix.writeUInt32LE(h.length, 8);
      return new Uint8Array(Buffer.concat([prefix, h, Buffer.from(data)]));
    };
    const f32 = [0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0];
    const expected = { dtype: "float32", shape: [2], data: new Float32Array([1.5, -2]) };
    // No padding at all, keys in another order, double quotes, a Python 2 long.
    expect(npyToNdarray(build("{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}\n", f32))).toEqual(expected);
    expect(npyToNdarray(build('{"descr":"<f4","fortran_order":False,"shape":(2L,)}', f32))).toEqual(expected);
    // 16-byte alignment as very old NumPy wrote it.
    const old = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    expect(npyToNdarray(build(old + " ".repeat(16 - ((10 + old.length + 1) % 16)) + "\n", f32))).toEqual(expected);
    // The Python 2 long suffix is only allowed before format 3.0, as in NumPy.
    expect(() => npyToNdarray(build("{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }", f32, 3))).toThrow(
      MalformedMessageError,
    );
  });

  test("refuses object (pickled) and structured dtypes", () => {
    const object =
      "934e554d5059010076007b276465736372273a20277c4f272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a8004";
    expect(() => npyToNdarray(bytes(object))).toThrow(MalformedMessageError);
    expect(() => npyToNdarray(bytes(object))).toThrow(/pickl/);
    const structured =
      "934e554d5059010076007b276465736372273a205b282761272c20273c693427292c20282762272c20273c663427295d2c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020202020202020202020200a00000000000000000000000000000000";
    expect(() => npyToNdarray(bytes(structured))).toThrow(/structured dtypes are not supported/);
  });

  test("refuses dtypes outside DType", () => {
    const float16 =
      "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028312c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a003c";
    expect(() => npyToNdarray(bytes(float16))).toThrow(/unsupported descr "<f2"/);
  });

  test("rejects truncated, padded or corrupted input with MalformedMessageError", () => {
    const good = bytes(SPEC_FLOAT32);
    const cases: Array<[string, Uint8Array]> = [
      ["empty", new Uint8Array(0)],
      ["bad magic", Uint8Array.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x58, 1, 0, 0, 0])],
      ["version 4.0", Uint8Array.from([...good.subarray(0, 6), 4, 0, ...good.subarray(8)])],
      ["short data", good.subarray(0, good.length - 1)],
      ["trailing bytes", Uint8Array.from([...good, 0])],
      ["header longer than the input", good.subarray(0, 100)],
      ["not a dict", bytes(SPEC_FLOAT32.replace("7b27", "5b27"))],
      ["missing key", bytes(SPEC_FLOAT32.replace("27666f727472616e5f6f7264657227", "27666f727472616e5f6f7264657827"))],
      ["one-element tuple without comma", bytes(SPEC_FLOAT32.replace("28322c29", "28322029"))],
    ];
    for (const [name, input] of cases) {
      expect(() => npyToNdarray(input)).toThrow(MalformedMessageError);
      try {
        npyToNdarray(input);
      } catch (err) {
        expect([name, (err as Error).message]).toEqual([name, expect.stringMatching(/^npyToNdarray: /)]);
      }
    }
  });
});
