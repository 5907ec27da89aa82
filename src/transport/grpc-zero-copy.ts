/**
 * Large messages through grpc-js with fewer copies: three of the extensions that
 * src/transport/grpc-extensions.ts applies when a daemon enables them (docs/grpc-extensions.md).
 *
 * grpc-js frames every message it sends (a compressed-flag byte and a 4-byte big-endian length:
 * gRPC's length-prefixed message) by allocating a new buffer and copying the serialized message
 * into it, after the serializer has already copied every tensor into one buffer; and it
 * receives a message as a list of chunks that it joins at the end. For a 100 MB model that was
 * three fresh 100 MB buffers per hop (their page faults cost more than the copying). The
 * extensions remove two of them:
 * - SERVER_ZERO_COPY_SEND (`BaseServerInterceptingCall.prototype.serializeMessage/sendMessage`):
 *   a response whose serializer has a gather form (`withGather`) is written as a list of chunks
 *   that reference the payload bytes, with no copy at all; one with headroom (ChunkedWriter's
 *   large outputs) gets its frame header written in front of it instead of being copied;
 * - CLIENT_ZERO_COPY_SEND (`CompressionFilter.prototype.sendMessage`,
 *   `Http2SubchannelCall.prototype.sendMessageWithContext`): the same for requests; a request
 *   from `sendableRequest` travels through grpc-js as a stand-in buffer and is written as its
 *   chunks (a channel that compresses gets the chunks joined, and compresses them as usual);
 * - INCREMENTAL_DECODER (`StreamDecoder.prototype.write`): a received message is copied into
 *   place as its chunks arrive, instead of all at once at the end, into a buffer that grows with
 *   the bytes that arrived, and charges a ReceiveAccount for it (the receive guard's budgets).
 * Without them every message goes through grpc-js's own code as one buffer. Nothing here runs on
 * import: grpc-extensions.ts calls `prepare()` and the function it returns.
 */
import { status as Status } from "@grpc/grpc-js";
import type { ServerHttp2Stream } from "node:http2";
import { collectYoungGarbage } from "../core/garbage-collection";
import {
  type DeferredReader,
  type EncodedChunks,
  chunkLength,
  deferredChunkOf,
  joinChunks,
  withHeadroom,
} from "../core/wire/chunked-writer";
import {
  type GrpcExtension,
  type GrpcTracer,
  MissingGrpcInternal,
  grpcTracer,
  isGrpcExtensionActive,
  requireGrpcInternal,
  requireMethod,
} from "./grpc-internals";

/** gRPC's message prefix: compressed flag (1 byte) + message length (4 bytes, big-endian). */
export const GRPC_FRAME_HEADER_BYTES = 5;

/** Property of a serializer function holding its gather form. */
const GATHER = Symbol("flwr.gatherSerialize");

export type GatherSerializer = (value: object) => EncodedChunks;
export type Serializer = (value: object) => Buffer;

/**
 * `serialize` with a gather form attached: servers with SERVER_ZERO_COPY_SEND call `gather` instead and write the
 * chunks as they are; anything else (clients, servers without it) calls `serialize`. Both must
 * produce the same bytes.
 */
export function withGather(serialize: Serializer, gather: GatherSerializer): Serializer {
  return Object.assign((value: object) => serialize(value), { [GATHER]: gather });
}

/** Client side: stand-in buffer -> the encoded request it stands for. */
const requestStandIns = new WeakMap<Buffer, EncodedChunks>();
/** Client side: frame header made for a stand-in -> the chunks that follow it on the wire. */
const framedStandIns = new WeakMap<Buffer, Uint8Array[]>();

/**
 * What to pass grpc-js as a client request for `encoded`: with CLIENT_ZERO_COPY_SEND active, an
 * empty stand-in buffer that the extended client writes as the chunks; without it, the chunks
 * joined into one buffer.
 */
export function sendableRequest(encoded: EncodedChunks): Buffer {
  if (!isGrpcExtensionActive("client-zero-copy-send")) return joinChunks(encoded);
  // A new object every time (it is a WeakMap key), whatever Buffer.alloc(0) may share.
  const standIn = Buffer.from(new ArrayBuffer(0));
  requestStandIns.set(standIn, encoded);
  return standIn;
}

/** The bytes a request buffer from `sendableRequest` (or any other buffer) stands for. */
export function requestBytes(request: Buffer): Buffer {
  const encoded = requestStandIns.get(request);
  return encoded === undefined ? request : joinChunks(encoded);
}

/**
 * A client `requestSerialize` for `gather` (see `sendableRequest`): its output is meant for
 * grpc-js only; `requestBytes` turns it into the bytes.
 */
export function gatherRequestSerializer(gather: GatherSerializer): Serializer {
  return (value: object): Buffer => sendableRequest(gather(value));
}

/** The framed message for `body`: in place when `body` has headroom, else copied. */
function frameMessage(body: Buffer): Buffer {
  const inPlace = withHeadroom(body, GRPC_FRAME_HEADER_BYTES);
  const framed = inPlace ?? Buffer.allocUnsafe(GRPC_FRAME_HEADER_BYTES + body.byteLength);
  writeFrameHeader(framed, body.byteLength);
  if (inPlace === undefined) body.copy(framed, GRPC_FRAME_HEADER_BYTES);
  return framed;
}

function writeFrameHeader(target: Buffer, messageLength: number): void {
  target.writeUInt8(0, 0);
  target.writeUInt32BE(messageLength, 1);
}

/** The frame header alone, for a message written after it in chunks. */
function frameHeader(messageLength: number): Buffer {
  const header = Buffer.allocUnsafe(GRPC_FRAME_HEADER_BYTES);
  writeFrameHeader(header, messageLength);
  return header;
}

/** What the extensions use of grpc-js's server call (BaseServerInterceptingCall, 1.14.7). */
interface ServerCall {
  handler: { path: string; serialize: Serializer & { [GATHER]?: GatherSerializer } };
  stream: ServerHttp2Stream;
  maxSendMessageSize: number;
  callEventTracker?: { addMessageSent(): void } | null;
  checkCancelled(): boolean;
  maybeSendMetadata(): void;
  sendStatus(status: { code: Status; details: string; metadata: null }): void;
}
interface ServerCallPrototype {
  serializeMessage: (this: ServerCall, value: object) => Buffer;
  sendMessage: (this: ServerCall, message: object, callback: () => void) => void;
}

/** grpc-js's server call tracer (TRACER_NAME of build/src/server-interceptors). */
const SERVER_CALL_TRACER = "server_call";

/**
 * Servers: a response with headroom is framed in place (`serializeMessage`), a response whose
 * serializer has a gather form is written as its chunks (`sendMessage`).
 */
export const SERVER_ZERO_COPY_SEND: GrpcExtension = {
  name: "server-zero-copy-send",
  prepare() {
    const what = "build/src/server-interceptors BaseServerInterceptingCall";
    const proto = requireGrpcInternal(
      what,
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a literal require of one reviewed build file (docs/grpc-extensions.md)
      () => require("@grpc/grpc-js/build/src/server-interceptors"),
      (mod) => (mod["BaseServerInterceptingCall"] as { prototype?: ServerCallPrototype } | undefined)?.prototype,
    );
    for (const key of ["serializeMessage", "sendMessage", "checkCancelled", "maybeSendMetadata", "sendStatus"])
      requireMethod(what, proto, key);
    const original = proto.sendMessage;
    const tracer = grpcTracer();
    return () => {
      // Same contract as grpc-js's: serialize with the method's serializer, return the framed bytes.
      proto.serializeMessage = function serializeMessage(this: ServerCall, value: object): Buffer {
        return frameMessage(this.handler.serialize(value));
      };
      proto.sendMessage = function sendMessage(this: ServerCall, message: object, callback: () => void): void {
        const gather = this.handler.serialize[GATHER];
        if (gather === undefined) {
          original.call(this, message, callback);
          return;
        }
        sendGathered(this, gather, message, callback, tracer);
      };
    };
  },
};

/** grpc-js's sendMessage, step for step (its trace line included), with the message written as a list of chunks. */
function sendGathered(
  call: ServerCall,
  gather: GatherSerializer,
  message: object,
  callback: () => void,
  tracer: GrpcTracer,
): void {
  if (call.checkCancelled()) return;
  let encoded: EncodedChunks;
  try {
    encoded = gather(message);
  } catch {
    call.sendStatus({ code: Status.INTERNAL, details: "Error serializing response", metadata: null });
    return;
  }
  if (call.maxSendMessageSize !== -1 && encoded.length > call.maxSendMessageSize) {
    call.sendStatus({
      code: Status.RESOURCE_EXHAUSTED,
      details: `Sent message larger than max (${encoded.length + GRPC_FRAME_HEADER_BYTES} vs. ${call.maxSendMessageSize})`,
      metadata: null,
    });
    return;
  }
  call.maybeSendMetadata();
  tracer.trace(
    SERVER_CALL_TRACER,
    `Request to ${call.handler.path} sent data frame of size ${encoded.length + GRPC_FRAME_HEADER_BYTES}`,
  );
  const stream = call.stream;
  const onWritten = (error?: Error | null): void => {
    if (error) {
      call.sendStatus({ code: Status.INTERNAL, details: "Internal server error", metadata: null });
      return;
    }
    call.callEventTracker?.addMessageSent();
    callback();
  };
  writeInBatches(stream, [frameHeader(encoded.length), ...encoded.chunks], SEND_BATCH_BYTES, onWritten);
}

/**
 * Most bytes of one message handed to an HTTP/2 stream at a time. Node's TLS socket copies every
 * write of several buffers into one new buffer before encrypting it, and Node's HTTP/2 writes as
 * many DATA frames at once as the peer's window allows: a 100 MB answer to a client with a
 * 16 MiB window was copied 16 MiB at a time into fresh memory, about 16 MiB more per answer on the
 * wire (bench relay 100 MB x 10: SuperLink peak 589 -> 402 MiB at 1 MiB, 398 at 256 KiB, 442 at
 * 4 MiB). The window, and so the throughput on long links, stays what the client asked for.
 */
const SEND_BATCH_BYTES = 1024 * 1024;

/** What writeInBatches needs of a stream (a Node Writable). */
export interface BatchWritable {
  cork(): void;
  uncork(): void;
  write(chunk: Uint8Array, callback?: (error?: Error | null) => void): boolean;
  /** A Node stream's events: on 'close' (destroyed: the call ended or was cancelled) a deferred reader is released at once. */
  once?(event: "close", listener: () => void): unknown;
  off?(event: "close", listener: () => void): unknown;
}

/**
 * Writes `pieces` in order, at most `batchBytes` of them (pieces are cut into views, never copied)
 * handed to `stream` at a time, each batch corked into one writev, the next one once the last
 * write of the previous one has completed; `done` once, after the last write or at the first error
 * (a destroyed stream fails every later write). A stand-in for deferred bytes (deferredChunkOf: a
 * spilled broadcast) is read batch by batch, so only the batch on the wire is in memory, into one
 * buffer reused from batch to batch (a batch is written when the next one is read), through a
 * reader of its own when the source has one (DeferredBytes.open), released once the last of its
 * bytes is read, at the first error, or when the stream closes, whichever comes first; a read that
 * fails ends the write with that error.
 */
export function writeInBatches(
  stream: BatchWritable,
  pieces: readonly Uint8Array[],
  batchBytes: number,
  done: (error?: Error | null) => void,
): void {
  let index = 0;
  let offset = 0;
  let scratch: Buffer | undefined;
  let reader: DeferredReader | undefined;
  let closed = false;
  const releaseReader = (): void => {
    const open = reader;
    if (open === undefined) return;
    reader = undefined;
    stream.off?.("close", onClose);
    open.release();
  };
  const onClose = (): void => {
    closed = true;
    releaseReader();
  };
  const finish = (error?: Error | null): void => {
    releaseReader();
    done(error);
  };
  const writeBatch = (error?: Error | null): void => {
    if (error) {
      finish(error);
      return;
    }
    if (index >= pieces.length) {
      finish();
      return;
    }
    if (closed) {
      finish(new Error("the stream closed before the message was written"));
      return;
    }
    stream.cork();
    let room = batchBytes;
    let scratchUsed = 0;
    while (index < pieces.length && room > 0) {
      const piece = pieces[index]!;
      const deferred = deferredChunkOf(piece);
      const length = chunkLength(piece);
      const n = Math.min(length - offset, room);
      let view: Uint8Array;
      try {
        if (deferred === undefined) view = offset === 0 && n === length ? piece : piece.subarray(offset, offset + n);
        else {
          if (offset === 0) {
            reader = deferred.open?.();
            if (reader !== undefined) stream.once?.("close", onClose);
          }
          scratch ??= Buffer.allocUnsafeSlow(batchBytes);
          view = (reader ?? deferred).slice(offset, n, scratch.subarray(scratchUsed, (scratchUsed += n)));
        }
      } catch (err) {
        stream.uncork();
        finish(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      offset += n;
      room -= n;
      if (offset === length) {
        releaseReader();
        index++;
        offset = 0;
      }
      if (index >= pieces.length || room <= 0) stream.write(view, writeBatch);
      else stream.write(view);
    }
    stream.uncork();
  };
  writeBatch();
}

interface CompressionFilterInstance {
  sendCompression: object;
  maxSendMessageLength: number;
}
interface WriteObject {
  message: Buffer;
  flags?: number | undefined;
}
interface CompressionFilterClass {
  new (options: object, shared: object): CompressionFilterInstance;
  prototype: { sendMessage: (this: CompressionFilterInstance, message: Promise<WriteObject>) => Promise<WriteObject> };
}
interface SubchannelCall {
  http2Stream: { cork(): void; uncork(): void; write(chunk: Uint8Array): boolean };
  traceEnabled?: boolean;
  trace(text: string): void;
}
interface SubchannelCallPrototype {
  sendMessageWithContext: (this: SubchannelCall, context: unknown, message: Buffer) => void;
}

/**
 * Clients: an uncompressed request is framed by the compression filter itself (in place when it
 * has headroom) instead of by the identity handler's copy, and a request from `sendableRequest`
 * travels through grpc-js as a stand-in (a frame header) and is written as its chunks by the
 * subchannel call. A channel that compresses gets the chunks joined and compresses as usual.
 */
export const CLIENT_ZERO_COPY_SEND: GrpcExtension = {
  name: "client-zero-copy-send",
  prepare() {
    const filterWhat = "build/src/compression-filter CompressionFilter";
    const filterClass = requireGrpcInternal(
      filterWhat,
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a literal require of one reviewed build file (docs/grpc-extensions.md)
      () => require("@grpc/grpc-js/build/src/compression-filter"),
      (mod) =>
        typeof mod["CompressionFilter"] === "function"
          ? (mod["CompressionFilter"] as CompressionFilterClass)
          : undefined,
    );
    requireMethod(filterWhat, filterClass.prototype, "sendMessage");
    const callWhat = "build/src/subchannel-call Http2SubchannelCall";
    const callProto = requireGrpcInternal(
      callWhat,
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a literal require of one reviewed build file (docs/grpc-extensions.md)
      () => require("@grpc/grpc-js/build/src/subchannel-call"),
      (mod) => (mod["Http2SubchannelCall"] as { prototype?: SubchannelCallPrototype } | undefined)?.prototype,
    );
    requireMethod(callWhat, callProto, "sendMessageWithContext");
    requireMethod(callWhat, callProto, "trace");
    // grpc-js 1.14.7's CompressionFilter constructor starts every filter with `new
    // IdentityHandler()` (not exported): a fresh filter's handler has the class to recognise.
    let identityProto: unknown;
    try {
      identityProto = Object.getPrototypeOf(new filterClass({}, {}).sendCompression);
    } catch (err) {
      throw new MissingGrpcInternal(
        `${filterWhat}: cannot construct (${err instanceof Error ? err.message : String(err)})`,
      );
    }
    if (typeof identityProto !== "object" || identityProto === null)
      throw new MissingGrpcInternal(`${filterWhat}: no sendCompression handler`);
    requireMethod(`${filterWhat} identity handler`, identityProto, "writeMessage");
    const filterSend = filterClass.prototype.sendMessage;
    const subchannelSend = callProto.sendMessageWithContext;
    return () => {
      filterClass.prototype.sendMessage = async function sendMessage(
        this: CompressionFilterInstance,
        message: Promise<WriteObject>,
      ): Promise<WriteObject> {
        const resolved = await message;
        const encoded = requestStandIns.get(resolved.message);
        if (Object.getPrototypeOf(this.sendCompression) !== identityProto) {
          // Compressing: grpc-js's own path, with the whole message.
          return filterSend.call(
            this,
            Promise.resolve(encoded === undefined ? resolved : { ...resolved, message: joinChunks(encoded) }),
          );
        }
        const length = encoded?.length ?? resolved.message.length;
        if (this.maxSendMessageLength !== -1 && length > this.maxSendMessageLength) {
          // What grpc-js throws for an oversized message (a status object, not an Error).
          // eslint-disable-next-line @typescript-eslint/only-throw-error
          throw {
            code: Status.RESOURCE_EXHAUSTED,
            details: `Attempted to send message with a size larger than ${this.maxSendMessageLength}`,
          };
        }
        // The identity handler never compresses: its flag byte is always 0, as frameMessage writes.
        if (encoded === undefined) return { message: frameMessage(resolved.message), flags: resolved.flags };
        const header = frameHeader(encoded.length);
        framedStandIns.set(header, encoded.chunks);
        return { message: header, flags: resolved.flags };
      };
      callProto.sendMessageWithContext = function sendMessageWithContext(
        this: SubchannelCall,
        context: unknown,
        message: Buffer,
      ): void {
        const chunks = framedStandIns.get(message);
        if (chunks === undefined || chunks.length === 0) {
          subchannelSend.call(this, context, message);
          return;
        }
        if (this.traceEnabled) {
          const length = chunks.reduce((sum, chunk) => sum + chunk.byteLength, message.length);
          this.trace(
            `write() called with message of length ${length} in ${chunks.length + 1} chunks (the last one follows)`,
          );
        }
        // Corked, everything leaves in one writev. grpc-js writes the last chunk itself, so its
        // callback, error handling, accounting and trace cover the message (after an error on an
        // earlier chunk the stream is destroyed and that last write fails too).
        const stream = this.http2Stream;
        const last = chunks[chunks.length - 1]!;
        stream.cork();
        try {
          stream.write(message);
          for (let i = 0; i < chunks.length - 1; i++) stream.write(chunks[i]!);
        } catch {
          // The stream is unusable; grpc-js's own write below fails the same way and ends the call.
        }
        try {
          subchannelSend.call(this, context, Buffer.from(last.buffer, last.byteOffset, last.byteLength));
        } finally {
          stream.uncork();
        }
      };
    };
  },
};

/**
 * Charged for the memory a call's decoder holds: `reserve(n)` runs before a message buffer grows
 * by n bytes and throws to refuse (the call then ends RESOURCE_EXHAUSTED with the error's
 * message, as for grpc-js's own size-limit error). See src/transport/receive-guard.ts.
 */
export interface ReceiveAccount {
  reserve(bytes: number): void;
}

/**
 * Told about a call's large messages (see src/transport/receive-admission.ts): `started` when the
 * frame header of a message of at least `minBytes` arrived (before any of its body is held),
 * `received` with its buffer once it is whole.
 */
export interface LargeMessageWatch {
  readonly minBytes: number;
  started(declaredBytes: number): void;
  received(message: Buffer): void;
}

/** Smallest buffer the decoder starts a message in (messages that declare less get exactly that). */
export const DECODER_MIN_CAPACITY = 1024;

interface DecoderInstance {
  maxReadMessageLength: number;
  [DECODER_STATE]?: DecoderState;
  [DECODER_ACCOUNT]?: ReceiveAccount;
  [DECODER_WATCH]?: LargeMessageWatch;
}
interface DecoderState {
  header: Buffer;
  headerFilled: number;
  /** The framed message being received (header included); grows with the bytes that arrived. */
  message: Buffer | undefined;
  /** For a large message: the resizable memory under `message`, grown in place. */
  resizable: ResizableArrayBuffer | undefined;
  /** Frame header + declared message length. */
  framedLength: number;
  filled: number;
}
const DECODER_STATE = Symbol("flwr.decoderState");
const DECODER_ACCOUNT = Symbol("flwr.decoderAccount");
const DECODER_WATCH = Symbol("flwr.decoderWatch");

/** Makes `decoder` (a grpc-js StreamDecoder) charge `account` for the message memory it holds. */
export function setDecoderAccount(decoder: object, account: ReceiveAccount): void {
  (decoder as DecoderInstance)[DECODER_ACCOUNT] = account;
}

/** Makes `decoder` (a grpc-js StreamDecoder) tell `watch` about its large messages. */
export function setDecoderLargeMessageWatch(decoder: object, watch: LargeMessageWatch): void {
  (decoder as DecoderInstance)[DECODER_WATCH] = watch;
}

/** Bytes of message buffer `decoder` holds now (for tests). */
export function decoderCapacity(decoder: object): number {
  return (decoder as DecoderInstance)[DECODER_STATE]?.message?.length ?? 0;
}

/** Messages larger than this grow in place (a resizable ArrayBuffer) instead of by copying. */
export const DECODER_IN_PLACE_GROWTH_BYTES = 1024 * 1024;

/**
 * A young-generation collection after every this many bytes of large messages received (by all
 * decoders of the process): the DATA chunks they were copied from are then freed within about as
 * many bytes, instead of piling up (bench relay 100 MB x 10: SuperLink peak -12 to -23 MiB, each
 * SuperNode 198 -> 175 MiB). One costs ~0.1 ms, twelve per 100 MB.
 */
export const YOUNG_COLLECTION_EVERY_BYTES = 8 * 1024 * 1024;
let largeBytesSinceYoungCollection = 0;

/** A large message's buffer becomes resizable when it grows to this size. */
const RESERVE_AFTER_BYTES = 64 * 1024;

interface ResizableArrayBuffer extends ArrayBuffer {
  resize(byteLength: number): void;
}
type ResizableArrayBufferConstructor = new (
  byteLength: number,
  options: { maxByteLength: number },
) => ResizableArrayBuffer;

/**
 * Memory for a large message that can grow up to `maxBytes` without moving: V8 reserves the
 * address space (no memory) and commits pages as the buffer grows, so growing costs no copy and
 * no page faults beyond the bytes that arrived. Undefined where that is unavailable (old V8, an
 * address-space limit), and the decoder copies on growth instead.
 */
function reserveResizable(byteLength: number, maxBytes: number): ResizableArrayBuffer | undefined {
  try {
    const memory = new (ArrayBuffer as unknown as ResizableArrayBufferConstructor)(byteLength, {
      maxByteLength: maxBytes,
    });
    return typeof memory.resize === "function" && memory.byteLength === byteLength ? memory : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The next size of a message buffer that must hold `needed` bytes: at least double the current
 * one (so copies on growth add up to less than the message), never beyond the framed length.
 */
function grownCapacity(current: number, needed: number, framedLength: number): number {
  return Math.min(framedLength, Math.max(needed, 2 * current, GRPC_FRAME_HEADER_BYTES + DECODER_MIN_CAPACITY));
}

/**
 * grpc-js's StreamDecoder (used by servers and clients) keeps every received DATA chunk of a
 * message and joins them when the last one arrives: a 100 MB message arrives as ~7,000 chunks,
 * then blocks the event loop for one 100 MB copy (and its page faults) at the very end while
 * the chunks and the copy are both held. This `write` does the same job (same input, same
 * output: whole framed messages, same size-limit error), copying each chunk into the message
 * buffer as it arrives, so the work is spread over the transfer and chunks are freed at once.
 * The buffer grows with the bytes that arrived (doubling), never to the size the header
 * declares before those bytes exist: a peer that declares 512 MiB and sends 16 bytes costs
 * 1 KiB, not an allocation of 512 MiB. A large message grows in place (reserveResizable), so
 * this costs what one allocation at the full size did (bench hop); a small one is copied on
 * growth (at most 1 MiB in all).
 */
export const INCREMENTAL_DECODER: GrpcExtension = {
  name: "incremental-decoder",
  prepare() {
    const what = "build/src/stream-decoder StreamDecoder";
    const proto = requireGrpcInternal(
      what,
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a literal require of one reviewed build file (docs/grpc-extensions.md)
      () => require("@grpc/grpc-js/build/src/stream-decoder"),
      (mod) => (mod["StreamDecoder"] as { prototype?: DecoderPrototype } | undefined)?.prototype,
    );
    requireMethod(what, proto, "write");
    return () => {
      proto.write = incrementalWrite;
    };
  },
};

interface DecoderPrototype {
  write: (this: DecoderInstance, data: Buffer) => Buffer[];
}

function incrementalWrite(this: DecoderInstance, data: Buffer): Buffer[] {
  const state = (this[DECODER_STATE] ??= {
    header: Buffer.alloc(GRPC_FRAME_HEADER_BYTES),
    headerFilled: 0,
    message: undefined,
    resizable: undefined,
    framedLength: 0,
    filled: 0,
  });
  const messages: Buffer[] = [];
  let pos = 0;
  while (pos < data.length) {
    if (state.framedLength === 0) {
      const n = Math.min(GRPC_FRAME_HEADER_BYTES - state.headerFilled, data.length - pos);
      data.copy(state.header, state.headerFilled, pos, pos + n);
      state.headerFilled += n;
      pos += n;
      if (state.headerFilled < GRPC_FRAME_HEADER_BYTES) break;
      const size = state.header.readUInt32BE(1);
      if (this.maxReadMessageLength !== -1 && size > this.maxReadMessageLength) {
        throw new Error(`Received message larger than max (${size} vs ${this.maxReadMessageLength})`);
      }
      state.headerFilled = 0;
      state.filled = GRPC_FRAME_HEADER_BYTES;
      if (size === 0) {
        messages.push(Buffer.from(state.header));
        continue;
      }
      state.framedLength = GRPC_FRAME_HEADER_BYTES + size;
      state.message = undefined;
      state.resizable = undefined;
      const watch = this[DECODER_WATCH];
      if (watch !== undefined && size >= watch.minBytes) watch.started(size);
    }
    const n = Math.min(state.framedLength - state.filled, data.length - pos);
    if (n === 0) break; // a header at the very end of `data`: nothing to hold yet
    const needed = state.filled + n;
    const current = state.message?.length ?? 0;
    if (needed > current) {
      const capacity = grownCapacity(current, needed, state.framedLength);
      this[DECODER_ACCOUNT]?.reserve(capacity - current);
      if (state.resizable !== undefined) {
        state.resizable.resize(capacity);
        state.message = Buffer.from(state.resizable, 0, capacity);
      } else {
        // Reserved only once 64 KiB arrived: a peer that sends a few bytes costs a small buffer,
        // not a reservation (the copy into it is of at most 64 KiB).
        const resizable =
          state.framedLength > DECODER_IN_PLACE_GROWTH_BYTES && capacity >= RESERVE_AFTER_BYTES
            ? reserveResizable(capacity, state.framedLength)
            : undefined;
        const grown = resizable !== undefined ? Buffer.from(resizable, 0, capacity) : Buffer.allocUnsafe(capacity);
        if (state.message === undefined) state.header.copy(grown, 0);
        else state.message.copy(grown, 0, 0, state.filled);
        state.message = grown;
        state.resizable = resizable;
      }
    }
    const message = state.message!;
    data.copy(message, state.filled, pos, pos + n);
    if (state.framedLength > DECODER_IN_PLACE_GROWTH_BYTES) {
      largeBytesSinceYoungCollection += n;
      if (largeBytesSinceYoungCollection >= YOUNG_COLLECTION_EVERY_BYTES) {
        largeBytesSinceYoungCollection = 0;
        collectYoungGarbage();
      }
    }
    state.filled = needed;
    pos += n;
    if (state.filled === state.framedLength) {
      const watch = this[DECODER_WATCH];
      if (watch !== undefined && state.framedLength - GRPC_FRAME_HEADER_BYTES >= watch.minBytes)
        watch.received(message);
      messages.push(message);
      state.message = undefined;
      state.resizable = undefined;
      state.framedLength = 0;
    }
  }
  return messages;
}
