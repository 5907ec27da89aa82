/** grpc-js implementation of the Driver service: one thin adapter per RPC over driver-handler.ts. */
import type { Logger } from "../../core/logger";
import type { DriverServer } from "../../proto/flwr/proto/driver";
import type { State } from "../../state/state";
import type { LongPollHub } from "../long-poll";
import { maxWaitFor, reply, serveUnary } from "../unary";
import * as driver from "./driver-handler";
import { refusedTaskInsCount } from "./push-count-limit";
import { ResultAnswerSizing } from "./result-answer-sizing";

export interface DriverServicerDeps {
  state: State;
  logger: Logger;
  hub: LongPollHub;
  /** How long an empty PullTaskRes may wait for results; 0 answers at once (Flower behaviour). */
  longPollMs: number;
  /** Most TaskIns per PushTaskIns (default DEFAULT_MAX_TASK_INS_PER_PUSH). */
  maxTaskInsPerPush?: number;
  /**
   * How long delivered TaskIns/TaskRes pairs are kept after the PullTaskRes answer went out
   * (0 = deleted at once, as Flower). "Went out" means grpc-js has the bytes, not that the
   * ServerApp got them: a crash right after would lose the results. Kept a little longer, they
   * can be delivered again when the ServerApp asks again (State.getTaskRes, docs/delivery.md).
   */
  deleteGraceMs?: number;
}

/** The Driver service implementation (never authenticated in Flower 1.10). */
export function createDriverServicer(deps: DriverServicerDeps): DriverServer {
  const { state, logger, hub, longPollMs, maxTaskInsPerPush } = deps;
  const graceMs = deps.deleteGraceMs ?? 0;
  const answerSizing = new ResultAnswerSizing();
  const deleteNow = (taskIds: Set<string>): void => {
    state.deleteTasks(taskIds).catch((err: unknown) => {
      // The state was closed meanwhile (shutdown) or the database is away; the rows expire
      // and are purged later.
      logger.debug({ err }, "Deletion of delivered tasks skipped");
    });
  };
  const deleteLater = (taskIds: Set<string>): void => {
    if (graceMs <= 0) {
      deleteNow(taskIds);
      return;
    }
    setTimeout(() => deleteNow(taskIds), graceMs).unref();
  };
  return {
    createRun: serveUnary(logger, "Driver.CreateRun", async ({ request, call }) => {
      const response = await driver.createRun(request, state);
      if (response.runId === 0n) return reply(response); // Flower's failure value; State logged why
      logger.info(
        { event: "superlink.run-created", runId: response.runId.toString(), peer: call.getPeer() },
        `Run ${response.runId} created`,
      );
      return reply(response);
    }),
    getNodes: serveUnary(logger, "Driver.GetNodes", async ({ request }) =>
      reply(await driver.getNodes(request, state)),
    ),
    pushTaskIns: serveUnary(logger, "Driver.PushTaskIns", async ({ request }) => {
      // Refused undecoded by withTaskInsCountLimit (counted only up to the limit + 1).
      const refused = refusedTaskInsCount(request);
      if (refused !== undefined)
        throw driver.tooManyTaskIns(refused, maxTaskInsPerPush ?? driver.DEFAULT_MAX_TASK_INS_PER_PUSH);
      return reply(
        await driver.pushTaskIns(request, state, {
          logger,
          ...(maxTaskInsPerPush !== undefined ? { maxTaskInsPerPush } : {}),
        }),
      );
    }),
    pullTaskRes: serveUnary(logger, "Driver.PullTaskRes", async ({ request, call, signal }) => {
      const maxWaitMs = maxWaitFor(call, longPollMs);
      // Only long-polling ServerApps (ours) pull again at once, so only their answers are sized.
      const limit = maxWaitMs > 0 ? answerSizing.limit() : undefined;
      const result = await driver.pullTaskResLongPoll(
        request,
        state,
        { hub, maxWaitMs, signal },
        driver.PULL_TASK_RES_RECHECK_MS,
        limit,
      );
      if (maxWaitMs > 0) answerSizing.observe(result.response.taskResList);
      return {
        response: result.response,
        // Flower deletes the delivered TaskIns/TaskRes pairs only once the answer went out with
        // OK; here: once grpc-js has it (after deleteGraceMs), never when the client had cancelled.
        afterSent: result.aborted ? undefined : () => deleteLater(result.taskIds),
      };
    }),
    getRun: serveUnary(logger, "Driver.GetRun", async ({ request }) => reply(await driver.getRun(request, state))),
  };
}
