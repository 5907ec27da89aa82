/**
 * The flwr-ts Driver API extension PushSharedTaskIns (docs/protocol.md, "Shared content"): TaskIns
 * that share RecordSets, each uploaded once. Like PushTaskIns (driver-handler.ts), plus: the
 * SuperLink hashes every uploaded content itself (SHA-256; a client's digest is only ever a
 * lookup key into content of the same run it hashed before), decodes it strictly, and stores it
 * once per run (State `SharedContent`). A reference to content the run does not hold is
 * UnknownContentError. A request with no TaskIns and no content is the Driver's support probe.
 */
import { MalformedMessageError, UnknownContentError } from "../../core/errors";
import type { Logger } from "../../core/logger";
import { RecordSet } from "../../proto/flwr/proto/recordset";
import type { TaskIns } from "../../proto/flwr/proto/task";
import type {
  PushSharedTaskInsRequest,
  PushSharedTaskInsResponse,
  SharedContentDriverServer,
} from "../../proto/flwr_ts/proto/shared_content";
import type { SharedContent, State } from "../../state/state";
import { contentDigest, sharedTaskBytes } from "../../state/state-support";
import { validateTaskInsOrRes } from "../../state/validator";
import { unixNow } from "../run-info";
import { reply, serveUnary } from "../unary";
import { DEFAULT_MAX_TASK_INS_PER_PUSH, tooManyTaskIns } from "./driver-handler";
import { refusedTaskInsCount } from "./push-count-limit";

const SHA256_BYTES = 32;

/** Stores the request's TaskIns in order, each with its shared content; all validated first. */
export async function pushSharedTaskIns(
  request: PushSharedTaskInsRequest,
  state: State,
  opts: { logger?: Logger; now?: () => number; maxTaskInsPerPush?: number } = {},
): Promise<PushSharedTaskInsResponse> {
  const items = request.taskInsList;
  if (items.length === 0 && request.contents.length === 0) return { taskIds: [], contentDigests: [] };
  if (items.length === 0) throw new MalformedMessageError("Malformed PushSharedTaskInsRequest: no TaskIns");
  const maxPerPush = opts.maxTaskInsPerPush ?? DEFAULT_MAX_TASK_INS_PER_PUSH;
  if (items.length > maxPerPush) throw tooManyTaskIns(items.length, maxPerPush);

  const uploaded = request.contents.map((encoded, i): SharedContent => {
    let recordset: RecordSet;
    try {
      recordset = RecordSet.decode(encoded);
    } catch (err) {
      throw new MalformedMessageError(`Malformed PushSharedTaskInsRequest: contents[${i}] is not a RecordSet`, {
        cause: err,
      });
    }
    return { digest: contentDigest(encoded), encoded, recordset };
  });
  const used = new Set<number>();
  const pushedAt = (opts.now ?? unixNow)();
  const problems: string[] = [];
  const resolved: Array<{ taskIns: TaskIns; content: SharedContent; uploadedIndex?: number }> = [];
  for (const [i, item] of items.entries()) {
    const where = `task_ins_list[${i}]`;
    const taskIns = item.taskIns;
    if (taskIns?.task === undefined) {
      problems.push(`${where}: no task_ins.task`);
      continue;
    }
    if (taskIns.task.recordset !== undefined || taskIns.task.error !== undefined) {
      problems.push(`${where}: a shared TaskIns carries neither recordset nor error`);
      continue;
    }
    let content: SharedContent | undefined;
    let uploadedIndex: number | undefined;
    if (item.contentIndex !== undefined) {
      content = uploaded[item.contentIndex];
      if (content === undefined) {
        problems.push(`${where}: content_index ${item.contentIndex} is out of range (${uploaded.length} contents)`);
        continue;
      }
      uploadedIndex = item.contentIndex;
      used.add(item.contentIndex);
    } else if (item.contentDigest !== undefined) {
      if (item.contentDigest.length !== SHA256_BYTES) {
        problems.push(`${where}: content_digest is not ${SHA256_BYTES} bytes`);
        continue;
      }
      const digest = Buffer.from(item.contentDigest).toString("hex");
      content = await state.sharedContent(taskIns.runId, digest);
      if (content === undefined) {
        throw new UnknownContentError(
          `PushSharedTaskIns: ${where} names content ${digest.slice(0, 16)}… that run ${taskIns.runId} does not hold ` +
            "(never uploaded to this run, or freed with its last TaskIns); send the content again",
        );
      }
    } else {
      problems.push(`${where}: neither content_index nor content_digest`);
      continue;
    }
    taskIns.task.pushedAt = pushedAt;
    taskIns.task.recordset = content.recordset;
    const errors = validateTaskInsOrRes(taskIns, "ins");
    if (errors.length > 0) problems.push(`${where}: ${errors.join(", ")}`);
    resolved.push({ taskIns, content, ...(uploadedIndex !== undefined ? { uploadedIndex } : {}) });
  }
  if (used.size < uploaded.length) problems.push(`${uploaded.length - used.size} of the contents are not referenced`);
  if (problems.length > 0)
    throw new MalformedMessageError(`Malformed PushSharedTaskInsRequest: ${problems.join("; ")}`);

  // All or nothing, as PushTaskIns: each uploaded content counts once per run that uses it (even
  // if that run holds it already: the state's own check per TaskIns is the exact one).
  const bytesByRun = new Map<bigint, number>();
  const counted = new Set<string>();
  for (const { taskIns, content, uploadedIndex } of resolved) {
    let bytes = sharedTaskBytes();
    const key = `${taskIns.runId}:${content.digest}`;
    if (uploadedIndex !== undefined && !counted.has(key)) {
      counted.add(key);
      bytes += content.encoded.length;
    }
    bytesByRun.set(taskIns.runId, (bytesByRun.get(taskIns.runId) ?? 0) + bytes);
  }
  await state.checkStorage(bytesByRun);

  const taskIds: string[] = [];
  for (const { taskIns, content } of resolved) {
    const taskId = await state.storeTaskIns(taskIns, content);
    if (taskId === undefined) {
      opts.logger?.warn(
        { event: "driver.push-task-ins.not-stored", runId: taskIns.runId.toString() },
        `PushSharedTaskIns: TaskIns not stored because run ${taskIns.runId} does not exist or it has already expired (answered "")`,
      );
    }
    taskIds.push(taskId ?? "");
  }
  return { taskIds, contentDigests: uploaded.map((c) => Buffer.from(c.digest, "hex")) };
}

export interface SharedContentServicerDeps {
  state: State;
  logger: Logger;
  maxTaskInsPerPush?: number;
}

/** The SharedContentDriver service, served on the Driver API's port. */
export function createSharedContentServicer(deps: SharedContentServicerDeps): SharedContentDriverServer {
  const { state, logger, maxTaskInsPerPush } = deps;
  return {
    pushSharedTaskIns: serveUnary(logger, "SharedContentDriver.PushSharedTaskIns", async ({ request }) => {
      // Refused undecoded by withTaskInsCountLimit (counted only up to the limit + 1).
      const refused = refusedTaskInsCount(request);
      if (refused !== undefined) throw tooManyTaskIns(refused, maxTaskInsPerPush ?? DEFAULT_MAX_TASK_INS_PER_PUSH);
      return reply(
        await pushSharedTaskIns(request, state, {
          logger,
          ...(maxTaskInsPerPush !== undefined ? { maxTaskInsPerPush } : {}),
        }),
      );
    }),
  };
}
