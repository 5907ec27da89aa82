/**
 * Large messages through grpc-js with fewer copies.
 *
 * grpc-js frames every message it sends (a compressed-flag byte and a 4-byte big-endian length:
 * gRPC's length-prefixed message) by allocating a new buffer and copying the serialized message
 * into it, after the serializer has already copied every tensor into one buffer; and it
 * receives a message as a list of chunks that it joins at the end. For a 100 MB model that was
 * three fresh 100 MB buffers per hop (their page faults cost more than the copying). Patches of
 * grpc-js 1.14 internals remove two of them:
 * - servers (`BaseServerInterceptingCall.prototype.sendMessage`): a response whose serializer
 *   has a gather form (`withGather`) is written as a list of chunks that reference the payload
 *   bytes, with no copy at all;
 * - clients (the compression filter's `sendMessage`, the identity handler's `writeMessage`,
 *   `Http2SubchannelCall.prototype.sendMessageWithContext`): a request from `sendableRequest`
 *   travels through grpc-js as a stand-in buffer and is written as its chunks (a channel that
 *   compresses gets the chunks joined, and compresses them as usual);
 * - both (`...serializeMessage`, `writeMessage`): a message with headroom (ChunkedWriter's large
 *   outputs) gets its frame header written in front of it instead of being copied;
 * - both (`StreamDecoder.prototype.write`): a received message is copied into place as its
 *   chunks arrive, instead of all at once at the end, into a buffer that grows with the bytes
 *   that arrived, not to the size the peer declares (see patchDecoder).
 * Everything else is framed and sent as grpc-js does it. If the internals are missing, nothing
 * is patched, every message goes through grpc-js's own code as one buffer, and
 * test/transport/grpc-zero-copy.test.ts fails so the upgrade is noticed.
 */
/* eslint-disable @typescript-eslint/no-require-imports -- grpc-js internals are loaded lazily inside try/catch: a layout change must disable a patch, not fail the import */
import { status as Status } from "@grpc/grpc-js";
import type { ServerHttp2Stream } from "node:http2";
import { type EncodedChunks, joinChunks, withHeadroom } from "../core/wire/chunked-writer";

/** gRPC's message prefix: compressed flag (1 byte) + message length (4 bytes, big-endian). */
export const GRPC_FRAME_HEADER_BYTES = 5;

/** Property of a serializer function holding its gather form. */
const GATHER = Symbol("flwr.gatherSerialize");

export type GatherSerializer = (value: object) => EncodedChunks;
export type Serializer = (value: object) => Buffer;

/**
 * `serialize` with a gather form attached: patched servers call `gather` instead and write the
 * chunks as they are; anything else (clients, unpatched servers) calls `serialize`. Both must
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
 * What to pass grpc-js as a client request for `encoded`: with the client patches, an empty
 * stand-in buffer that the patched client writes as the chunks; without them, the chunks joined
 * into one buffer.
 */
export function sendableRequest(encoded: EncodedChunks): Buffer {
  if (!installGrpcZeroCopy().clientGather) return joinChunks(encoded);
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

/** What the patches use of grpc-js's server call (all present in 1.14). */
interface ServerCall {
  handler: { serialize: Serializer & { [GATHER]?: GatherSerializer } };
  stream: ServerHttp2Stream;
  maxSendMessageSize: number;
  callEventTracker?: { addMessageSent(): void } | null;
  checkCancelled(): boolean;
  maybeSendMetadata(): void;
  sendStatus(status: { code: Status; details: string; metadata: null }): void;
}
interface ServerCallPrototype {
  serializeMessage?: (this: ServerCall, value: object) => Buffer;
  sendMessage?: (this: ServerCall, message: object, callback: () => void) => void;
  checkCancelled?: unknown;
  maybeSendMetadata?: unknown;
  sendStatus?: unknown;
}
interface IdentityHandlerPrototype {
  writeMessage?: (message: Buffer, compress: boolean) => Promise<Buffer>;
}

export interface InstalledPatches {
  /** Received messages are copied into place as their bytes arrive. */
  receiveInPlace: boolean;
  /** Server responses with a gather form are written without copying. */
  serverGather: boolean;
  /** Server responses with headroom are framed in place. */
  serverHeadroom: boolean;
  /** Uncompressed client requests with headroom are framed in place. */
  clientHeadroom: boolean;
  /** Client requests from `gatherRequestSerializer` are written as chunks. */
  clientGather: boolean;
}

let installed: InstalledPatches | undefined;

/** Patches grpc-js once per process; says which patches could be applied. */
export function installGrpcZeroCopy(): InstalledPatches {
  if (installed === undefined) {
    installed = { ...patchServer(), ...patchClient(), receiveInPlace: patchDecoder() };
  }
  return installed;
}

function patchServer(): { serverGather: boolean; serverHeadroom: boolean } {
  let proto: ServerCallPrototype | undefined;
  try {
    const mod = require("@grpc/grpc-js/build/src/server-interceptors") as {
      BaseServerInterceptingCall?: { prototype: ServerCallPrototype };
    };
    proto = mod.BaseServerInterceptingCall?.prototype;
  } catch {
    return { serverGather: false, serverHeadroom: false };
  }
  if (proto === undefined || typeof proto.serializeMessage !== "function") {
    return { serverGather: false, serverHeadroom: false };
  }
  // Same contract as grpc-js's: serialize with the method's serializer, return the framed bytes.
  proto.serializeMessage = function serializeMessage(this: ServerCall, value: object): Buffer {
    return frameMessage(this.handler.serialize(value));
  };
  const original = proto.sendMessage;
  if (
    typeof original !== "function" ||
    typeof proto.checkCancelled !== "function" ||
    typeof proto.maybeSendMetadata !== "function" ||
    typeof proto.sendStatus !== "function"
  ) {
    return { serverGather: false, serverHeadroom: true };
  }
  proto.sendMessage = function sendMessage(this: ServerCall, message: object, callback: () => void): void {
    const gather = this.handler.serialize[GATHER];
    if (gather === undefined) {
      original.call(this, message, callback);
      return;
    }
    sendGathered(this, gather, message, callback);
  };
  return { serverGather: true, serverHeadroom: true };
}

/** grpc-js's sendMessage, step for step, with the message written as a list of chunks. */
function sendGathered(call: ServerCall, gather: GatherSerializer, message: object, callback: () => void): void {
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
  const stream = call.stream;
  const onWritten = (error?: Error | null): void => {
    if (error) {
      call.sendStatus({ code: Status.INTERNAL, details: "Internal server error", metadata: null });
      return;
    }
    call.callEventTracker?.addMessageSent();
    callback();
  };
  // Corked, the pieces leave in one writev; the last write's callback reports for all of them
  // (after an error, later writes fail too).
  const pieces = [frameHeader(encoded.length), ...encoded.chunks];
  stream.cork();
  for (let i = 0; i < pieces.length - 1; i++) stream.write(pieces[i]!);
  stream.write(pieces[pieces.length - 1]!, onWritten);
  stream.uncork();
}

interface CompressionFilterInstance {
  sendCompression: object;
  maxSendMessageLength: number;
}
interface CompressionFilterClass {
  new (options: object, shared: object): CompressionFilterInstance;
  prototype: { sendMessage?: (this: CompressionFilterInstance, message: Promise<WriteObject>) => Promise<WriteObject> };
}
interface WriteObject {
  message: Buffer;
  flags?: number;
}
interface SubchannelCallPrototype {
  sendMessageWithContext?: (this: { http2Stream: { cork(): void; uncork(): void; write(chunk: Uint8Array): boolean } }, context: unknown, message: Buffer) => void;
}

function patchClient(): { clientHeadroom: boolean; clientGather: boolean } {
  const none = { clientHeadroom: false, clientGather: false };
  let filterClass: CompressionFilterClass | undefined;
  let subchannelCall: SubchannelCallPrototype | undefined;
  try {
    filterClass = (require("@grpc/grpc-js/build/src/compression-filter") as { CompressionFilter?: CompressionFilterClass }).CompressionFilter;
    subchannelCall = (
      require("@grpc/grpc-js/build/src/subchannel-call") as { Http2SubchannelCall?: { prototype: SubchannelCallPrototype } }
    ).Http2SubchannelCall?.prototype;
  } catch {
    return none;
  }
  if (typeof filterClass !== "function") return none;
  // A fresh filter starts with the identity handler: its class is the one to patch.
  const identity = new filterClass({}, {}).sendCompression;
  const identityProto = Object.getPrototypeOf(identity) as IdentityHandlerPrototype;
  if (identityProto.constructor.name !== "IdentityHandler" || typeof identityProto.writeMessage !== "function") return none;
  const filterSend = filterClass.prototype.sendMessage;
  const subchannelSend = subchannelCall?.sendMessageWithContext;
  const canGather = typeof filterSend === "function" && typeof subchannelSend === "function";

  // The identity handler never compresses: its flag byte is always 0, as frameMessage writes.
  identityProto.writeMessage = async function writeMessage(message: Buffer): Promise<Buffer> {
    const encoded = canGather ? requestStandIns.get(message) : undefined;
    if (encoded === undefined) return frameMessage(message);
    const header = frameHeader(encoded.length);
    framedStandIns.set(header, encoded.chunks);
    return header;
  };
  if (!canGather || subchannelCall === undefined) return { clientHeadroom: true, clientGather: false };

  filterClass.prototype.sendMessage = async function sendMessage(this: CompressionFilterInstance, message: Promise<WriteObject>): Promise<WriteObject> {
    const resolved = await message;
    const encoded = requestStandIns.get(resolved.message);
    if (encoded === undefined) return filterSend.call(this, Promise.resolve(resolved));
    if (Object.getPrototypeOf(this.sendCompression) !== identityProto) {
      // Compressing: hand grpc-js the whole message, as without the patch.
      return filterSend.call(this, Promise.resolve({ ...resolved, message: joinChunks(encoded) }));
    }
    if (this.maxSendMessageLength !== -1 && encoded.length > this.maxSendMessageLength) {
      // What grpc-js throws for an oversized message.
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- grpc-js's own status object, as its writeMessage throws
      throw { code: Status.RESOURCE_EXHAUSTED, details: `Attempted to send message with a size larger than ${this.maxSendMessageLength}` };
    }
    return filterSend.call(this, Promise.resolve(resolved));
  };

  subchannelCall.sendMessageWithContext = function sendMessageWithContext(context: unknown, message: Buffer): void {
    const chunks = framedStandIns.get(message);
    if (chunks === undefined || chunks.length === 0) {
      subchannelSend.call(this, context, message);
      return;
    }
    // Corked, everything leaves in one writev. grpc-js writes the last chunk itself, so its
    // callback, error handling and accounting cover the message (after an error on an earlier
    // chunk the stream is destroyed and that last write fails too).
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
  return { clientHeadroom: true, clientGather: true };
}

/**
 * Charged for the memory a call's decoder holds: `reserve(n)` runs before a message buffer grows
 * by n bytes and throws to refuse (the call then ends RESOURCE_EXHAUSTED with the error's
 * message, as for grpc-js's own size-limit error). See src/transport/receive-guard.ts.
 */
export interface ReceiveAccount {
  reserve(bytes: number): void;
}

/** Smallest buffer the decoder starts a message in (messages that declare less get exactly that). */
export const DECODER_MIN_CAPACITY = 1024;

interface DecoderInstance {
  maxReadMessageLength: number;
  [DECODER_STATE]?: DecoderState;
  [DECODER_ACCOUNT]?: ReceiveAccount;
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

/** Makes `decoder` (a grpc-js StreamDecoder) charge `account` for the message memory it holds. */
export function setDecoderAccount(decoder: object, account: ReceiveAccount): void {
  (decoder as DecoderInstance)[DECODER_ACCOUNT] = account;
}

/** Bytes of message buffer `decoder` holds now (for tests). */
export function decoderCapacity(decoder: object): number {
  return (decoder as DecoderInstance)[DECODER_STATE]?.message?.length ?? 0;
}

/** Messages larger than this grow in place (a resizable ArrayBuffer) instead of by copying. */
export const DECODER_IN_PLACE_GROWTH_BYTES = 1024 * 1024;

/** A large message's buffer becomes resizable when it grows to this size. */
const RESERVE_AFTER_BYTES = 64 * 1024;

interface ResizableArrayBuffer extends ArrayBuffer {
  resize(byteLength: number): void;
}
type ResizableArrayBufferConstructor = new (byteLength: number, options: { maxByteLength: number }) => ResizableArrayBuffer;

/**
 * Memory for a large message that can grow up to `maxBytes` without moving: V8 reserves the
 * address space (no memory) and commits pages as the buffer grows, so growing costs no copy and
 * no page faults beyond the bytes that arrived. Undefined where that is unavailable (old V8, an
 * address-space limit), and the decoder copies on growth instead.
 */
function reserveResizable(byteLength: number, maxBytes: number): ResizableArrayBuffer | undefined {
  try {
    const memory = new (ArrayBuffer as unknown as ResizableArrayBufferConstructor)(byteLength, { maxByteLength: maxBytes });
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
function patchDecoder(): boolean {
  let proto: { write?: (this: DecoderInstance, data: Buffer) => Buffer[] } | undefined;
  try {
    proto = (require("@grpc/grpc-js/build/src/stream-decoder") as { StreamDecoder?: { prototype: typeof proto } }).StreamDecoder
      ?.prototype;
  } catch {
    return false;
  }
  if (proto === undefined || typeof proto.write !== "function") return false;
  proto.write = function write(this: DecoderInstance, data: Buffer): Buffer[] {
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
            state.framedLength > DECODER_IN_PLACE_GROWTH_BYTES && capacity >= RESERVE_AFTER_BYTES ? reserveResizable(capacity, state.framedLength) : undefined;
          const grown = resizable !== undefined ? Buffer.from(resizable, 0, capacity) : Buffer.allocUnsafe(capacity);
          if (state.message === undefined) state.header.copy(grown, 0);
          else state.message.copy(grown, 0, 0, state.filled);
          state.message = grown;
          state.resizable = resizable;
        }
      }
      const message = state.message!;
      data.copy(message, state.filled, pos, pos + n);
      state.filled = needed;
      pos += n;
      if (state.filled === state.framedLength) {
        messages.push(message);
        state.message = undefined;
        state.resizable = undefined;
        state.framedLength = 0;
      }
    }
    return messages;
  };
  return true;
}
