/**
 * The Driver side of the flwr-ts shared-content extension (docs/protocol.md, "Shared content"):
 * which TaskIns of a push carry the same large RecordSet, how they are grouped into
 * PushSharedTaskIns requests (each content once, later references by the digest the SuperLink
 * acknowledged), and the request encoder that writes a RecordSet as the `bytes` of a content
 * without encoding it to one buffer first (an embedded message and `bytes` are the same on the
 * wire: tag, length, bytes).
 *
 * Identity is decided on the encoded bytes: same length, and every chunk either the same view of
 * the same memory (the usual case: every client's instruction refers to the strategy's one
 * parameters array) or equal bytes.
 */
import type { BinaryWriter } from "@bufbuild/protobuf/wire";
import { type EncodedChunks, encodeMessageChunks } from "../core/wire/chunked-writer";
import { taskPayloadBytes } from "../core/wire/payload-bytes";
import { RecordSet } from "../proto/flwr/proto/recordset";
import type { TaskIns } from "../proto/flwr/proto/task";
import { SharedTaskIns } from "../proto/flwr_ts/proto/shared_content";

/** A TaskIns carrying at least this much tensor payload goes through the shared path. */
const SHARED_MIN_PAYLOAD_BYTES = 64 * 1024;
/** Acknowledged contents remembered at once (each holds its RecordSet alive). */
const MAX_REMEMBERED = 4;
/**
 * An acknowledged content is forgotten this long after it was last referenced, so its arrays
 * are not kept alive through a round: the instructions of one round are pushed back to back.
 */
const REMEMBER_MS = 2_000;

/** The request as this client writes it: contents as RecordSets, encoded in place. */
export interface SharedPushRequest {
  contents: RecordSet[];
  taskInsList: SharedTaskIns[];
}

/** Writes SharedPushRequest as the bytes of a flwr_ts.proto.PushSharedTaskInsRequest. */
export const SHARED_PUSH_REQUEST_ENCODER = {
  encode(message: SharedPushRequest, writer: BinaryWriter): BinaryWriter {
    for (const content of message.contents) RecordSet.encode(content, writer.uint32(10).fork()).join();
    for (const item of message.taskInsList) SharedTaskIns.encode(item, writer.uint32(18).fork()).join();
    return writer;
  },
};

/** True when the two encodings are the same bytes. */
function sameEncoding(a: EncodedChunks, b: EncodedChunks): boolean {
  if (a.length !== b.length) return false;
  if (a.chunks.length === b.chunks.length) {
    let same = true;
    for (let i = 0; i < a.chunks.length && same; i++) {
      const x = a.chunks[i]!;
      const y = b.chunks[i]!;
      if (x.length !== y.length) same = false;
      else if (x.buffer === y.buffer && x.byteOffset === y.byteOffset) continue;
      else same = Buffer.from(x.buffer, x.byteOffset, x.length).equals(y);
    }
    if (same) return true;
  }
  // Chunked differently: compare the bytes as one stream.
  return Buffer.concat(a.chunks).equals(Buffer.concat(b.chunks));
}

/** One distinct content of a push. */
export interface PushContent {
  recordset: RecordSet;
  encoded: EncodedChunks;
}

/** A run of TaskIns sent as one request: plain PushTaskIns, or PushSharedTaskIns. */
export type PushPart =
  | { kind: "plain"; taskInsList: TaskIns[] }
  | {
      kind: "shared";
      /** The TaskIns with their RecordSets (sent as they are if the SuperLink lacks the extension). */
      taskInsList: TaskIns[];
      /** Per TaskIns, its content. */
      contentOf: PushContent[];
    };

/**
 * Splits a push into parts, in order: TaskIns with at least SHARED_MIN_PAYLOAD_BYTES of payload
 * are "shared" (same content -> same PushContent object), the others "plain". A part holds at
 * most `maxBytes` of payload that is not already in it (a larger item alone), so a broadcast is
 * one part however many nodes it goes to.
 */
export function planPush(list: TaskIns[], maxBytes: number): PushPart[] {
  const parts: PushPart[] = [];
  const distinct: PushContent[] = [];
  let current: PushPart | undefined;
  let bytes = 0;
  for (const taskIns of list) {
    const size = taskPayloadBytes(taskIns);
    const recordset = taskIns.task?.recordset;
    if (size < SHARED_MIN_PAYLOAD_BYTES || recordset === undefined) {
      if (current?.kind !== "plain" || (current.taskInsList.length > 0 && bytes + size > maxBytes)) {
        current = { kind: "plain", taskInsList: [] };
        parts.push(current);
        bytes = 0;
      }
      current.taskInsList.push(taskIns);
      bytes += size;
      continue;
    }
    let content = distinct.find((c) => c.recordset === recordset);
    if (content === undefined) {
      const encoded = encodeMessageChunks(RecordSet, recordset);
      content = distinct.find((c) => sameEncoding(c.encoded, encoded));
      if (content === undefined) {
        content = { recordset, encoded };
        distinct.push(content);
      }
    }
    const isNew = current?.kind !== "shared" || !current.contentOf.includes(content);
    if (current?.kind !== "shared" || (isNew && current.taskInsList.length > 0 && bytes + size > maxBytes)) {
      current = { kind: "shared", taskInsList: [], contentOf: [] };
      parts.push(current);
      bytes = 0;
    }
    current.taskInsList.push(taskIns);
    current.contentOf.push(content);
    if (isNew) bytes += size;
  }
  return parts;
}

interface Remembered {
  encoded: EncodedChunks;
  digest: Buffer;
  lastUsed: number;
}

/**
 * Contents the SuperLink acknowledged (answered with their digests) on this channel, for a
 * short while: later pushes of the same content send only the digest.
 */
export class AcknowledgedContents {
  private entries: Remembered[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /** The acknowledged digest of this content, if remembered. */
  digestOf(content: PushContent): Buffer | undefined {
    this.expire();
    const entry = this.entries.find((e) => sameEncoding(e.encoded, content.encoded));
    if (entry === undefined) return undefined;
    entry.lastUsed = this.now();
    return entry.digest;
  }

  remember(content: PushContent, digest: Buffer): void {
    this.forget(digest);
    this.entries.push({ encoded: content.encoded, digest, lastUsed: this.now() });
    if (this.entries.length > MAX_REMEMBERED) this.entries.shift();
    this.timer ??= setInterval(() => this.expire(), REMEMBER_MS).unref();
  }

  forget(digest: Buffer): void {
    this.entries = this.entries.filter((e) => !e.digest.equals(digest));
  }

  clear(): void {
    this.entries = [];
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private expire(): void {
    const cutoff = this.now() - REMEMBER_MS;
    this.entries = this.entries.filter((e) => e.lastUsed > cutoff);
    if (this.entries.length === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

/**
 * The request for a shared part: each content not acknowledged yet is uploaded once (by index),
 * acknowledged ones are referenced by digest. `uploaded[i]` is the content of `contents[i]`.
 */
export function sharedRequest(
  part: Extract<PushPart, { kind: "shared" }>,
  acknowledged: AcknowledgedContents | undefined,
): { request: SharedPushRequest; uploaded: PushContent[] } {
  const uploaded: PushContent[] = [];
  const taskInsList: SharedTaskIns[] = part.taskInsList.map((taskIns, i) => {
    const content = part.contentOf[i]!;
    const envelope: TaskIns = { ...taskIns, task: { ...taskIns.task!, recordset: undefined } };
    const digest = acknowledged?.digestOf(content);
    if (digest !== undefined) return { taskIns: envelope, contentIndex: undefined, contentDigest: digest };
    let index = uploaded.indexOf(content);
    if (index < 0) index = uploaded.push(content) - 1;
    return { taskIns: envelope, contentIndex: index, contentDigest: undefined };
  });
  return { request: { contents: uploaded.map((c) => c.recordset), taskInsList }, uploaded };
}
