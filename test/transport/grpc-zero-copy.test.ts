/**
 * src/transport/grpc-zero-copy.ts holds the grpc-js extensions that send large messages as
 * chunks (no copy) and receive them in place; test/helpers/grpc-extensions-setup.ts enables them
 * for every test file, as the daemons do. Checked here: the extended decoder returns exactly
 * what grpc-js's own returns for any chunking; real calls over TLS carry the exact bytes both
 * ways, also with compression on, with size limits enforced as before; and a large chunked
 * upload and download can share one connection.
 */
import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import { Writable } from "node:stream";
import { StreamDecoder } from "@grpc/grpc-js/build/src/stream-decoder";
import type { DeferredBytes, DeferredReader, EncodedChunks } from "../../src/core/wire/chunked-writer";
import { createClient } from "../../src/transport/channel";
import { type RunningGrpcServer, startGrpcServer } from "../../src/transport/grpc-server";
import { channelCredentials, serverCredentials } from "../../src/transport/tls";
import {
  DECODER_IN_PLACE_GROWTH_BYTES,
  DECODER_MIN_CAPACITY,
  decoderCapacity,
  gatherRequestSerializer,
  requestBytes,
  sendableRequest,
  setDecoderAccount,
  withGather,
  writeInBatches,
  YOUNG_COLLECTION_EVERY_BYTES,
} from "../../src/transport/grpc-zero-copy";
import { bytesOf, prng } from "../helpers/random-bytes";
import { ChunkedWriter, chunkLength, deferredChunkOf, joinChunks } from "../../src/core/wire/chunked-writer";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { runNodeScript } from "../helpers/node-script";
import { isGrpcExtensionActive } from "../../src/transport/grpc-extensions";

type DecoderWrite = (this: StreamDecoder, data: Buffer) => Buffer[];
// grpc-js's own decoder, from a copy of grpc-js loaded apart from the extended one.
let originalDecoderWrite: DecoderWrite | undefined;
jest.isolateModules(() => {
  originalDecoderWrite = // eslint-disable-next-line @typescript-eslint/no-require-imports
    (require("@grpc/grpc-js/build/src/stream-decoder") as { StreamDecoder: { prototype: { write: DecoderWrite } } })
      .StreamDecoder.prototype.write;
});
const pristineWrite = (decoder: StreamDecoder, data: Buffer): Buffer[] => originalDecoderWrite!.call(decoder, data);

let fx: Fixtures;
const servers: RunningGrpcServer[] = [];
const clients: grpc.Client[] = [];

beforeAll(() => {
  fx = generateFixtures(1);
});
afterAll(() => fx.cleanup());
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close(0);
});

function framed(message: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

test("the zero-copy extensions are active and the decoder is grpc-js's no more", () => {
  for (const name of ["server-zero-copy-send", "client-zero-copy-send", "incremental-decoder"] as const)
    expect(isGrpcExtensionActive(name)).toBe(true);
  expect(StreamDecoder.prototype.write).not.toBe(originalDecoderWrite);
});

describe("the in-place decoder", () => {
  test("returns what grpc-js's decoder returns, for random messages cut at random points", () => {
    const rand = prng(20261130);
    const sizes = [0, 1, 4, 5, 6, 100, 16_384, 70_000, 300_000];
    for (let round = 0; round < 40; round++) {
      const messages = Array.from({ length: 1 + Math.floor(rand() * 5) }, () =>
        bytesOf(rand, sizes[Math.floor(rand() * sizes.length)]!),
      );
      const stream = Buffer.concat(messages.map(framed));
      // Cuts: single bytes (inside headers too), small and large pieces.
      const pieces: Buffer[] = [];
      for (let pos = 0; pos < stream.length;) {
        const kind = rand();
        const n = kind < 0.3 ? 1 : kind < 0.6 ? 1 + Math.floor(rand() * 10) : 1 + Math.floor(rand() * 40_000);
        pieces.push(stream.subarray(pos, pos + n));
        pos += n;
      }
      const ours = new StreamDecoder(-1);
      const theirs = new StreamDecoder(-1);
      const got: Buffer[] = [];
      const want: Buffer[] = [];
      for (const piece of pieces) {
        got.push(...ours.write(piece));
        want.push(...pristineWrite(theirs, piece));
      }
      expect(got.length).toBe(messages.length);
      expect(got.map((b) => b.toString("hex"))).toEqual(want.map((b) => b.toString("hex")));
    }
  });

  test("refuses a message over the limit with grpc-js's error, before allocating it", () => {
    const header = framed(Buffer.alloc(0));
    header.writeUInt32BE(1001, 1);
    expect(() => new StreamDecoder(1000).write(header)).toThrow("Received message larger than max (1001 vs 1000)");
    expect(() => pristineWrite(new StreamDecoder(1000), header)).toThrow(
      "Received message larger than max (1001 vs 1000)",
    );
  });
});

describe("the in-place decoder's buffer grows with the bytes that arrived", () => {
  const headerDeclaring = (size: number): Buffer => {
    const header = Buffer.alloc(5);
    header.writeUInt32BE(size, 1);
    return header;
  };

  test("a header declaring 512 MiB followed by 11 bytes holds a few KiB, not 512 MiB", () => {
    const decoder = new StreamDecoder(-1);
    expect(decoder.write(Buffer.concat([headerDeclaring(512 * 1024 * 1024), Buffer.alloc(11, 7)]))).toEqual([]);
    expect(decoderCapacity(decoder)).toBe(5 + DECODER_MIN_CAPACITY);
    // A header alone allocates nothing.
    const headerOnly = new StreamDecoder(-1);
    headerOnly.write(headerDeclaring(512 * 1024 * 1024));
    expect(decoderCapacity(headerOnly)).toBe(0);
  });

  test("4,000 decoders each told of 512 MiB hold under 32 MiB together", () => {
    const before = process.memoryUsage().arrayBuffers;
    const decoders = Array.from({ length: 4000 }, () => {
      const d = new StreamDecoder(-1);
      d.write(Buffer.concat([headerDeclaring(512 * 1024 * 1024), Buffer.alloc(11)]));
      return d;
    });
    const held = decoders.reduce((n, d) => n + decoderCapacity(d), 0);
    expect(held).toBe(4000 * (5 + DECODER_MIN_CAPACITY));
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 * 1024 * 1024);
  });

  test("while a message arrives its buffer is at most twice the bytes so far (or the minimum), and ends exact", () => {
    const rand = prng(77);
    const body = bytesOf(rand, 1_000_003);
    const stream = framed(body);
    const decoder = new StreamDecoder(-1);
    let pos = 0;
    const out: Buffer[] = [];
    while (pos < stream.length) {
      const n = 1 + Math.floor(rand() * 20_000);
      out.push(...decoder.write(stream.subarray(pos, pos + n)));
      pos += n;
      if (out.length === 0) {
        expect(decoderCapacity(decoder)).toBeLessThanOrEqual(
          Math.max(2 * Math.min(pos, stream.length), 5 + DECODER_MIN_CAPACITY),
        );
      }
    }
    expect(out).toHaveLength(1);
    expect(out[0]!.length).toBe(stream.length);
    expect(out[0]!.equals(stream)).toBe(true);
    expect(decoderCapacity(decoder)).toBe(0);
  });

  test("a large message grows in place (one resizable buffer from 64 KiB on, no copies after that)", () => {
    const body = bytesOf(prng(11), 3 * 1024 * 1024);
    const stream = framed(body);
    const decoder = new StreamDecoder(-1);
    const out: Buffer[] = [];
    let underlying: ArrayBufferLike | undefined;
    for (let pos = 0; pos < stream.length; pos += 16_384) {
      out.push(...decoder.write(stream.subarray(pos, pos + 16_384)));
      const now = (decoder as unknown as Record<symbol, { message?: Buffer }>)[
        Object.getOwnPropertySymbols(decoder)[0]!
      ]?.message?.buffer;
      if (now !== undefined && (now as ArrayBuffer & { resizable?: boolean }).resizable === true) {
        underlying ??= now;
        expect(now).toBe(underlying); // resizable from 64 KiB on, and never moved again
      }
    }
    expect(out).toHaveLength(1);
    expect(out[0]!.equals(stream)).toBe(true);
    expect((out[0]!.buffer as ArrayBuffer & { resizable?: boolean }).resizable).toBe(true);
    expect(out[0]!.buffer).toBe(underlying);
    expect(DECODER_IN_PLACE_GROWTH_BYTES).toBeLessThan(stream.length);
  });

  test("a small message is allocated exactly once, at its framed size", () => {
    const reserved: number[] = [];
    const decoder = new StreamDecoder(-1);
    setDecoderAccount(decoder, { reserve: (n) => reserved.push(n) });
    const message = Buffer.from("a small ping");
    const [got] = decoder.write(framed(message));
    expect(got!.equals(framed(message))).toBe(true);
    expect(reserved).toEqual([5 + message.length]);
  });

  test("the account is charged for every byte of growth and can refuse it with its own error", () => {
    const reserved: number[] = [];
    const decoder = new StreamDecoder(-1);
    setDecoderAccount(decoder, { reserve: (n) => reserved.push(n) });
    const stream = framed(bytesOf(prng(3), 300_000));
    for (let pos = 0; pos < stream.length; pos += 16_384) decoder.write(stream.subarray(pos, pos + 16_384));
    expect(reserved.reduce((a, b) => a + b, 0)).toBe(stream.length);
    expect(reserved.length).toBeGreaterThan(3);

    const refusing = new StreamDecoder(-1);
    let total = 0;
    setDecoderAccount(refusing, {
      reserve: (n) => {
        if (total + n > 100_000) throw new Error("over budget");
        total += n;
      },
    });
    expect(() => {
      for (let pos = 0; pos < stream.length; pos += 16_384) refusing.write(stream.subarray(pos, pos + 16_384));
    }).toThrow("over budget");
    expect(total).toBeLessThanOrEqual(100_000);
  });

  test("the chunks a large message was copied from are freed while it arrives, not tens of MiB later", () => {
    // Fresh 16 KiB chunks, as Node hands a received HTTP/2 stream: V8 sees only their small JS
    // objects, so on its own it lets ~32 MiB of them die before collecting (measured here).
    const declared = 48 * 1024 * 1024;
    const decoder = new StreamDecoder(-1);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(declared, 1);
    expect(decoder.write(header)).toEqual([]);
    const before = process.memoryUsage().arrayBuffers;
    let most = 0;
    let whole: Buffer[] = [];
    for (let sent = 0; sent < declared; sent += 16 * 1024) {
      whole = decoder.write(Buffer.alloc(16 * 1024, sent & 0xff));
      most = Math.max(most, process.memoryUsage().arrayBuffers - before);
    }
    expect(whole).toHaveLength(1);
    expect(whole[0]!.length).toBe(5 + declared);
    expect(most).toBeLessThan(2 * YOUNG_COLLECTION_EVERY_BYTES);
  });

  test("an empty message is a 5-byte frame and costs nothing", () => {
    const reserved: number[] = [];
    const decoder = new StreamDecoder(-1);
    setDecoderAccount(decoder, { reserve: (n) => reserved.push(n) });
    const got = decoder.write(Buffer.concat([framed(Buffer.alloc(0)), framed(Buffer.from("x"))]));
    expect(got.map((b) => b.toString("hex"))).toEqual(["0000000000", "000000000178"]);
    expect(reserved).toEqual([6]);
  });
});

/** A raw-bytes method whose request and response may be given as chunks. */
type Parts = { parts: Uint8Array[] };
const encoded = (v: Parts): EncodedChunks => ({
  chunks: v.parts,
  length: v.parts.reduce((n, p) => n + chunkLength(p), 0),
});
const joined = (v: Parts): Buffer => joinChunks(encoded(v));
const ECHO: grpc.MethodDefinition<Parts, Buffer> = {
  path: "/t.ZeroCopy/Echo",
  requestStream: false,
  responseStream: false,
  requestSerialize: gatherRequestSerializer((v: object) => encoded(v as Parts)),
  requestDeserialize: (b: Buffer) => b as unknown as Parts,
  responseSerialize: withGather(
    (v: object) => joined(v as Parts),
    (v: object) => encoded(v as Parts),
  ),
  responseDeserialize: (b: Buffer) => b,
};

/** Answers with the request reversed: as it is, or (`deferred`) as deferred bytes read into the writer's buffer. */
type EchoAnswer = (back: Buffer) => Parts;
const answerInParts: EchoAnswer = (back) => {
  const half = Math.floor(back.length / 2);
  return { parts: [back.subarray(0, half), Buffer.alloc(0), back.subarray(half)] };
};
/** The reversed request as a `bytes` field (length prefix, then the bytes), read in pieces as it is sent. */
const answerDeferred: EchoAnswer = (back) => {
  const writer = new ChunkedWriter();
  writer.deferredBytes({
    byteLength: back.length,
    slice: (offset, length, into) => {
      into!.set(back.subarray(offset, offset + length));
      return into!;
    },
  });
  return { parts: writer.finishChunks().chunks };
};

async function echoServer(options: grpc.ChannelOptions = {}, answer = answerInParts): Promise<RunningGrpcServer> {
  const credentials = serverCredentials({
    caCert: fx.read(fx.caCert),
    cert: fx.read(fx.serverCert),
    key: fx.read(fx.serverKey),
  });
  const server = await startGrpcServer(
    "127.0.0.1:0",
    credentials,
    [
      {
        definition: { echo: ECHO },
        implementation: {
          // Answer with the request reversed, in three chunks around a small middle one.
          echo: (call: grpc.ServerUnaryCall<Buffer, unknown>, cb: grpc.sendUnaryData<unknown>) => {
            cb(null, answer(Buffer.from(call.request).reverse()));
          },
        },
      },
    ],
    options,
  );
  servers.push(server);
  return server;
}

function echoClient(
  server: RunningGrpcServer,
  options: grpc.ChannelOptions = {},
): (parts: Uint8Array[]) => Promise<Buffer> {
  const Client = grpc.makeGenericClientConstructor({ echo: ECHO }, "ZeroCopy");
  const client = createClient(
    Client,
    `localhost:${server.port}`,
    channelCredentials({ rootCertificates: fx.read(fx.caCert) }),
    options,
  );
  clients.push(client);
  const call = client["echo"] as (req: Parts, cb: (e: grpc.ServiceError | null, r: Buffer) => void) => void;
  return (parts) =>
    new Promise((resolve, reject) => call.call(client, { parts }, (e, r) => (e ? reject(e) : resolve(r))));
}

/**
 * A Writable that completes every handover (one write, or one writev of corked writes) a turn of
 * the event loop later, like a socket, and records what it was handed.
 */
function recordingWritable(failOnHandover?: number): {
  stream: Writable;
  handovers: number[];
  received: Buffer[];
  maxOutstanding: () => number;
  sameMemory: () => boolean;
  sources: Set<ArrayBufferLike>;
} {
  const handovers: number[] = [];
  const received: Buffer[] = [];
  const sources = new Set<ArrayBufferLike>();
  let outstanding = 0;
  let maxOutstanding = 0;
  let allShared = true;
  const take = (chunks: Buffer[], callback: (error?: Error | null) => void): void => {
    const bytes = chunks.reduce((n, c) => n + c.length, 0);
    handovers.push(bytes);
    outstanding += bytes;
    maxOutstanding = Math.max(maxOutstanding, outstanding);
    for (const c of chunks) {
      if (c.length > 0 && !sources.has(c.buffer)) allShared = false;
      received.push(Buffer.from(c));
    }
    setImmediate(() => {
      outstanding -= bytes;
      callback(handovers.length === failOnHandover ? new Error("socket closed") : null);
    });
  };
  const stream = new Writable({
    write: (chunk: Buffer, _encoding, callback) => take([chunk], callback),
    writev: (chunks, callback) =>
      take(
        chunks.map((c) => c.chunk as Buffer),
        callback,
      ),
  });
  // The stream's own 'error' event goes to whoever owns the stream (grpc-js, for a call's stream).
  stream.on("error", () => undefined);
  return { stream, handovers, received, maxOutstanding: () => maxOutstanding, sameMemory: () => allShared, sources };
}

describe("large answers are handed to the stream in batches (writeInBatches)", () => {
  const payload = bytesOf(prng(11), 5 * 1024 * 1024 + 17);
  const pieces = [
    Buffer.from([0, 1, 2, 3, 4]),
    payload.subarray(0, 3 * 1024 * 1024 + 1),
    Buffer.alloc(0),
    payload.subarray(3 * 1024 * 1024 + 1, 3 * 1024 * 1024 + 11),
    payload.subarray(3 * 1024 * 1024 + 11),
  ];
  const whole = Buffer.concat(pieces);
  const batch = 1024 * 1024;

  test("every byte in order, never more than one batch handed over or unwritten at once, no copies", async () => {
    const sink = recordingWritable();
    for (const p of pieces) sink.sources.add(p.buffer);
    let calls = 0;
    const error = await new Promise<Error | null | undefined>((resolve) =>
      writeInBatches(sink.stream, pieces, batch, (e) => {
        calls++;
        resolve(e);
      }),
    );
    expect(error).toBeUndefined();
    expect(Buffer.concat(sink.received).equals(whole)).toBe(true);
    expect(Math.max(...sink.handovers)).toBeLessThanOrEqual(batch);
    expect(sink.maxOutstanding()).toBeLessThanOrEqual(batch);
    expect(sink.handovers.length).toBe(Math.ceil(whole.length / batch));
    expect(sink.sameMemory()).toBe(true);
    await new Promise((r) => setImmediate(r));
    expect(calls).toBe(1);
  });

  test("a message within one batch leaves in one writev, as a corked write did", async () => {
    const sink = recordingWritable();
    const small = [Buffer.from([0, 0, 0, 0, 3]), Buffer.from("ab"), Buffer.from("c")];
    await new Promise<void>((resolve) => writeInBatches(sink.stream, small, batch, () => resolve()));
    expect(sink.handovers).toEqual([8]);
    expect(Buffer.concat(sink.received).toString("latin1")).toBe("\0\0\0\0\u0003abc");
  });

  test("the first failed batch ends it: done once, with the error, nothing written after", async () => {
    const sink = recordingWritable(2);
    let calls = 0;
    const error = await new Promise<Error | null | undefined>((resolve) =>
      writeInBatches(sink.stream, pieces, batch, (e) => {
        calls++;
        resolve(e);
      }),
    );
    expect(error?.message).toBe("socket closed");
    await new Promise((r) => setTimeout(r, 20));
    expect(sink.handovers.length).toBe(2);
    expect(calls).toBe(1);
  });

  /** Deferred bytes over `bytes`, counting what is read at once; `failAt`: the read from there throws. */
  const deferredOver = (bytes: Uint8Array, failAt?: number) => {
    const reads: number[] = [];
    const writer = new ChunkedWriter();
    writer.raw(Buffer.from([9, 9]));
    writer.deferredBytes({
      byteLength: bytes.length,
      slice: (offset, length) => {
        if (failAt !== undefined && offset + length > failAt) throw new Error("EIO");
        reads.push(length);
        return Buffer.from(bytes.subarray(offset, offset + length));
      },
    });
    return { encoded: writer.finishChunks(), reads };
  };

  test("deferred bytes are read one batch at a time, in order, and joined or finished the same", async () => {
    const { encoded, reads } = deferredOver(payload);
    expect(encoded.chunks.some((c) => deferredChunkOf(c) !== undefined)).toBe(true);
    const sink = recordingWritable();
    const error = await new Promise<Error | null | undefined>((resolve) =>
      writeInBatches(sink.stream, encoded.chunks, batch, resolve),
    );
    expect(error).toBeUndefined();
    const expected = Buffer.concat([Buffer.from([9, 9]), new BinaryWriter().uint32(payload.length).finish(), payload]);
    expect(Buffer.concat(sink.received).equals(expected)).toBe(true);
    expect(encoded.length).toBe(expected.length);
    expect(Math.max(...reads)).toBeLessThanOrEqual(batch);
    expect(sink.maxOutstanding()).toBeLessThanOrEqual(batch);
    expect(joinChunks(encoded).equals(expected)).toBe(true);
  });

  test("a deferred read that fails ends it with that error, done once", async () => {
    const { encoded } = deferredOver(payload, 2 * batch);
    const sink = recordingWritable();
    let calls = 0;
    const error = await new Promise<Error | null | undefined>((resolve) =>
      writeInBatches(sink.stream, encoded.chunks, batch, (e) => {
        calls++;
        resolve(e);
      }),
    );
    expect(error?.message).toBe("EIO");
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toBe(1);
    expect(sink.handovers.length).toBe(2);
  });
});

/**
 * Deferred bytes over `bytes` that are read only through readers (DeferredBytes.open), counting
 * readers opened and released, releases of a released reader, reads after release and reads out
 * of order; `failAt`: a read from there throws; `onRead`: told of every read.
 */
function deferredWithReaders(bytes: Uint8Array, options: { failAt?: number; onRead?: () => void } = {}) {
  const counts = { opened: 0, released: 0, releasedTwice: 0, lateReads: 0, outOfOrder: 0 };
  const source: DeferredBytes = {
    byteLength: bytes.length,
    slice: () => {
      throw new Error("read without a reader");
    },
    open: (): DeferredReader => {
      counts.opened++;
      let released = false;
      let position = 0;
      return {
        slice: (offset, length, into) => {
          options.onRead?.();
          if (released) counts.lateReads++;
          if (offset !== position) counts.outOfOrder++;
          position = offset + length;
          if (options.failAt !== undefined && offset + length > options.failAt) throw new Error("EIO");
          const out = into ?? new Uint8Array(length);
          out.set(bytes.subarray(offset, offset + length));
          return out;
        },
        release: () => {
          if (released) counts.releasedTwice++;
          released = true;
          counts.released++;
        },
      };
    },
  };
  return { source, counts };
}

describe("deferred bytes with readers (DeferredBytes.open): one reader per write, released exactly once", () => {
  const payload = bytesOf(prng(13), 3 * 1024 * 1024 + 5);
  const batch = 1024 * 1024;
  /** A message with the deferred bytes twice (two readers per write), and the bytes it is. */
  const twice = (source: DeferredBytes): { encoded: EncodedChunks; expected: Buffer } => {
    const writer = new ChunkedWriter();
    writer.raw(Buffer.from([9]));
    writer.deferredBytes(source);
    writer.raw(Buffer.from([8]));
    writer.deferredBytes(source);
    const prefix = new BinaryWriter().uint32(payload.length).finish();
    return {
      encoded: writer.finishChunks(),
      expected: Buffer.concat([Buffer.from([9]), prefix, payload, Buffer.from([8]), prefix, payload]),
    };
  };
  const write = (stream: Writable, encoded: EncodedChunks) =>
    new Promise<Error | null | undefined>((resolve) => writeInBatches(stream, encoded.chunks, batch, resolve));

  test("written whole: each reader reads its ranges in order and is released after its last one", async () => {
    const { source, counts } = deferredWithReaders(payload);
    const { encoded, expected } = twice(source);
    const sink = recordingWritable();
    expect(await write(sink.stream, encoded)).toBeUndefined();
    expect(Buffer.concat(sink.received).equals(expected)).toBe(true);
    expect(counts).toEqual({ opened: 2, released: 2, releasedTwice: 0, lateReads: 0, outOfOrder: 0 });
    // Joined (a client, a server without the extensions): one reader each too.
    expect(joinChunks(encoded).equals(expected)).toBe(true);
    expect(counts).toMatchObject({ opened: 4, released: 4, releasedTwice: 0 });
  });

  test.each([
    ["a read fails", { failAt: 2 * batch }, undefined, "EIO"],
    ["a write fails", {}, 2, "socket closed"],
  ])("released once when %s", async (_, options, failOnHandover, message) => {
    const { source, counts } = deferredWithReaders(payload, options);
    const sink = recordingWritable(failOnHandover);
    expect((await write(sink.stream, twice(source).encoded))?.message).toBe(message);
    await new Promise((r) => setTimeout(r, 20));
    expect(counts).toEqual({ opened: 1, released: 1, releasedTwice: 0, lateReads: 0, outOfOrder: 0 });
  });

  test("released once when the stream closes mid-message (a cancelled call), with nothing read after", async () => {
    const { source, counts } = deferredWithReaders(payload);
    const sink = recordingWritable();
    const outcomes: (Error | null | undefined)[] = [];
    writeInBatches(sink.stream, twice(source).encoded.chunks, batch, (e) => outcomes.push(e));
    expect(counts).toMatchObject({ opened: 1, released: 0 });
    sink.stream.destroy();
    for (let i = 0; i < 100 && counts.released === 0; i++) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 20));
    expect(counts).toEqual({ opened: 1, released: 1, releasedTwice: 0, lateReads: 0, outOfOrder: 0 });
    expect(outcomes.length).toBeLessThanOrEqual(1);
    if (outcomes.length === 1) expect(outcomes[0]).toBeInstanceOf(Error);
    expect(sink.stream.listenerCount("close")).toBe(0);
  });

  test("over TLS, a client that cancels during the answer releases the server's reader", async () => {
    const big = bytesOf(prng(17), 32 * 1024 * 1024);
    let cancel: (() => void) | undefined;
    const { source, counts } = deferredWithReaders(big, { onRead: () => cancel?.() });
    const server = await echoServer({}, () => {
      const writer = new ChunkedWriter();
      writer.deferredBytes(source);
      return { parts: writer.finishChunks().chunks };
    });
    const Client = grpc.makeGenericClientConstructor({ echo: ECHO }, "ZeroCopy");
    const client = createClient(
      Client,
      `localhost:${server.port}`,
      channelCredentials({ rootCertificates: fx.read(fx.caCert) }),
      { "grpc.max_receive_message_length": -1 },
    );
    clients.push(client);
    const echo = client["echo"] as (req: Parts, cb: (e: grpc.ServiceError | null) => void) => grpc.ClientUnaryCall;
    const failed = new Promise<grpc.ServiceError | null>((resolve) => {
      const call = echo.call(client, { parts: [Buffer.from("x")] }, resolve);
      cancel = () => {
        cancel = undefined;
        setImmediate(() => call.cancel());
      };
    });
    expect((await failed)?.code).toBe(grpc.status.CANCELLED);
    for (let i = 0; i < 500 && counts.released === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(counts).toMatchObject({ opened: 1, released: 1, releasedTwice: 0, lateReads: 0, outOfOrder: 0 });
  });
});

describe("chunked sends over TLS", () => {
  const payload = bytesOf(prng(5), 3 * 1024 * 1024 + 3);
  const parts = [payload.subarray(0, 7), payload.subarray(7, 2_000_000), Buffer.alloc(0), payload.subarray(2_000_000)];
  const reversed = Buffer.from(payload).reverse();

  test("carry the exact bytes both ways", async () => {
    const echo = echoClient(await echoServer());
    expect((await echo(parts)).equals(reversed)).toBe(true);
    expect((await echo([])).length).toBe(0);
    expect((await echo([Buffer.from("x")])).toString()).toBe("x");
  });

  test("carry deferred bytes exactly, read batch after batch into one reused buffer", async () => {
    const echo = echoClient(await echoServer({}, answerDeferred));
    const prefix = new BinaryWriter().uint32(payload.length).finish();
    expect((await echo(parts)).equals(Buffer.concat([prefix, reversed]))).toBe(true);
  });

  test("carry the exact bytes when the channel compresses (the chunks are joined first)", async () => {
    const echo = echoClient(await echoServer(), {
      "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip,
    });
    expect((await echo(parts)).equals(reversed)).toBe(true);
  });

  test("keep the send size limits: client and server refuse an oversized message", async () => {
    const server = await echoServer({ "grpc.max_send_message_length": 1000 });
    const tooBigForServer = echoClient(server);
    await expect(tooBigForServer([Buffer.alloc(1001)])).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    await expect(tooBigForServer([Buffer.alloc(1000)])).resolves.toHaveLength(1000);
    const limitedClient = echoClient(server, { "grpc.max_send_message_length": 10 });
    await expect(limitedClient([Buffer.alloc(6), Buffer.alloc(5)])).rejects.toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
    });
  });

  test("a request stand-in stands for its bytes", () => {
    const standIn = sendableRequest({ chunks: [Buffer.from("ab"), Buffer.from("c")], length: 3 });
    expect(standIn.length).toBe(0);
    expect(requestBytes(standIn).toString()).toBe("abc");
    expect(requestBytes(Buffer.from("plain")).toString()).toBe("plain");
  });
});

test("a 20 MB chunked upload and a 20 MB chunked download share one TLS connection without deadlock", async () => {
  // In a child process (the built dist/): a deadlocked HTTP/2 session never closes and would
  // keep jest from exiting.
  const dist = (f: string): string => JSON.stringify(join(REPO_ROOT, "dist", "transport", f));
  const script = `
    const grpc = require("@grpc/grpc-js");
    const fs = require("node:fs");
    const { startGrpcServer } = require(${dist("grpc-server.js")});
    const { createClient } = require(${dist("channel.js")});
    const { gatherRequestSerializer, withGather } = require(${dist("grpc-zero-copy.js")});
    require(${dist("grpc-extensions.js")}).enableGrpcExtensions();
    const [ca, cert, key] = process.argv.slice(1).map((f) => fs.readFileSync(f));
    const size = 20000000;
    const chunksOf = (fill) => ({ chunks: [Buffer.alloc(size / 2, fill), Buffer.alloc(size / 2, fill)], length: size });
    const method = (path) => ({ path, requestStream: false, responseStream: false,
      requestSerialize: gatherRequestSerializer((v) => v), requestDeserialize: (b) => b,
      responseSerialize: withGather((v) => Buffer.concat(v.chunks), (v) => v), responseDeserialize: (b) => b });
    const definition = { upload: method("/t.Both/Upload"), download: method("/t.Both/Download") };
    (async () => {
      const server = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createSsl(ca, [{ private_key: key, cert_chain: cert }], false), [{
        definition,
        implementation: {
          upload: (call, cb) => {
            const answer = Buffer.from(call.request.length + ":" + call.request[size - 1]);
            cb(null, { chunks: [answer], length: answer.length });
          },
          download: (_call, cb) => cb(null, chunksOf(2)),
        },
      }]);
      const Client = grpc.makeGenericClientConstructor(definition, "Both");
      const client = createClient(Client, "localhost:" + server.port, grpc.credentials.createSsl(ca));
      const call = (m, body) => new Promise((ok, fail) => client[m](body, (e, r) => (e ? fail(e) : ok(r))));
      const [up, down] = await Promise.all([call("upload", chunksOf(1)), call("download", { chunks: [], length: 0 })]);
      console.log(JSON.stringify({ uploaded: up.toString(), downloaded: down.length, last: down[size - 1] }));
      process.exit(0);
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const run = await runNodeScript(script, [fx.caCert, fx.serverCert, fx.serverKey], 30_000);
  expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" }); // killed (code null) = stalled 30 s: deadlock
  expect(JSON.parse(run.stdout)).toEqual({ uploaded: "20000000:1", downloaded: 20_000_000, last: 2 });
});
