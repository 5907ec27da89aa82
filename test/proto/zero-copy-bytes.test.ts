/**
 * scripts/zero-copy-bytes.js: decoded `bytes` fields of at least 1024 bytes are views into the
 * decoded buffer (no copy of a large tensor), shorter ones are copies (a small field must not
 * keep a large message alive). Both are Buffers with the right content.
 */
import { Array as ProtoArray, ConfigsRecordValue, BytesList } from "../../src/proto/flwr/proto/recordset";
import { Scalar } from "../../src/proto/flwr/proto/transport";

/** Whether `part` lies inside `whole`'s memory (small Buffers may share Node's pool slab). */
function sharesMemory(part: Uint8Array, whole: Uint8Array): boolean {
  return (
    part.buffer === whole.buffer &&
    part.byteOffset >= whole.byteOffset &&
    part.byteOffset + part.byteLength <= whole.byteOffset + whole.byteLength
  );
}

describe("decoding bytes fields", () => {
  const big = Buffer.alloc(4096, 7);
  const small = Buffer.from([1, 2, 3]);

  it("Array.data of >= 1024 bytes is a view into the input, a shorter one a copy", () => {
    const encodedBig = Buffer.from(ProtoArray.encode(ProtoArray.fromPartial({ dtype: "u8", data: big })).finish());
    const decodedBig = ProtoArray.decode(encodedBig);
    expect(Buffer.isBuffer(decodedBig.data)).toBe(true);
    expect(decodedBig.data.equals(big)).toBe(true);
    expect(sharesMemory(decodedBig.data, encodedBig)).toBe(true);

    const encodedSmall = Buffer.from(ProtoArray.encode(ProtoArray.fromPartial({ dtype: "u8", data: small })).finish());
    const decodedSmall = ProtoArray.decode(encodedSmall);
    expect(Buffer.isBuffer(decodedSmall.data)).toBe(true);
    expect(decodedSmall.data.equals(small)).toBe(true);
    expect(sharesMemory(decodedSmall.data, encodedSmall)).toBe(false);
  });

  it("applies to every bytes field: config values, bytes lists and legacy Scalars", () => {
    const value = ConfigsRecordValue.decode(ConfigsRecordValue.encode({ bytes: big }).finish());
    expect(value.bytes!.equals(big)).toBe(true);
    const list = BytesList.decode(BytesList.encode({ vals: [big, small] }).finish());
    expect(list.vals.map((v) => v.length)).toEqual([4096, 3]);
    expect(list.vals.every((v) => Buffer.isBuffer(v))).toBe(true);
    const encodedScalar = Scalar.encode(Scalar.fromPartial({ bytes: big })).finish();
    expect(sharesMemory(Scalar.decode(encodedScalar).bytes!, encodedScalar)).toBe(true);
  });

  it("a view at an odd offset still reads correctly (no alignment assumed)", () => {
    const encoded = Buffer.from(ProtoArray.encode(ProtoArray.fromPartial({ dtype: "x", data: big })).finish());
    const shifted = Buffer.concat([Buffer.from([0]), encoded]).subarray(1);
    const decoded = ProtoArray.decode(shifted);
    expect(decoded.data.byteOffset % 2).toBe(1);
    expect(decoded.data.equals(big)).toBe(true);
  });
});
