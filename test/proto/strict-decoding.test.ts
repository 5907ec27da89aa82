/**
 * scripts/strict-decoding.js: the generated decoders reject what Python's protobuf (upb) rejects
 * with DecodeError, still skip well-formed unknown fields, and still decode large `bytes` fields
 * as views (the strictness adds no copy).
 */
import { Array as ProtoArray } from "../../src/proto/flwr/proto/recordset";
import { CreateRunRequest, PullTaskResRequest } from "../../src/proto/flwr/proto/driver";
import { PingRequest } from "../../src/proto/flwr/proto/fleet";
import { TaskIns } from "../../src/proto/flwr/proto/task";

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);

describe("strict decoding", () => {
  it.each([
    ["field number 0", () => PingRequest.decode(bytes(0x00, 0x00)), /field number 0/],
    ["field number 0, length-delimited", () => PingRequest.decode(bytes(0x02, 0x00)), /field number 0/],
    ["a stray END_GROUP", () => PingRequest.decode(bytes(0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c, 0x11)), /END_GROUP/],
    ["a stray END_GROUP in a submessage", () => PullTaskResRequest.decode(bytes(0x0a, 0x01, 0x0c)), /END_GROUP/],
    ["an END_GROUP of another field", () => PingRequest.decode(bytes(0x1b, 0x24)), /end group/],
    ["invalid UTF-8", () => PullTaskResRequest.decode(bytes(0x12, 0x02, 0xff, 0xfe)), /./],
    ["a lone surrogate in UTF-8 (CESU)", () => CreateRunRequest.decode(bytes(0x0a, 0x03, 0xed, 0xa0, 0x80)), /./],
    [
      "a field running past its submessage",
      () => PullTaskResRequest.decode(bytes(0x0a, 0x01, 0x08, 0x05)),
      /past the end/,
    ],
    ["wire type 7", () => PingRequest.decode(bytes(0x0f)), /wire type/],
  ])("rejects %s", (_name, decode, message) => {
    expect(decode).toThrow(message);
  });

  it("skips well-formed unknown fields, groups included", () => {
    // node{node_id=1}, field 15 varint, field 3 group {field 1 varint}, field 14 length-delimited.
    const ping = PingRequest.decode(
      bytes(0x0a, 0x02, 0x08, 0x02, 0x78, 0x01, 0x1b, 0x08, 0x01, 0x1c, 0x72, 0x01, 0x41),
    );
    expect(ping.node).toEqual({ nodeId: 1n, anonymous: false });
  });

  it("keeps valid non-ASCII strings and decodes a group_id with control characters as sent", () => {
    const groupId = "ünïcødé 🌸\n\u001b[2K";
    expect(TaskIns.decode(TaskIns.encode(TaskIns.fromPartial({ groupId })).finish()).groupId).toBe(groupId);
    const fabId = "é".repeat(40); // longer than the ASCII fast path
    expect(
      CreateRunRequest.decode(CreateRunRequest.encode(CreateRunRequest.fromPartial({ fabId })).finish()).fabId,
    ).toBe(fabId);
  });

  it("still decodes a large bytes field as a view into the input", () => {
    const data = Buffer.alloc(1 << 20, 3);
    const encoded = Buffer.from(ProtoArray.encode(ProtoArray.fromPartial({ dtype: "u8", data })).finish());
    const decoded = ProtoArray.decode(encoded);
    expect(decoded.data.buffer).toBe(encoded.buffer);
    expect(decoded.data.equals(data)).toBe(true);
  });
});
