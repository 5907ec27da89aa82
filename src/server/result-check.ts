/**
 * Screening of training results before aggregation: one client that returns arrays the others
 * cannot be averaged with (undecodable bytes, another number of arrays, another shape or dtype)
 * is that client's failure, not the round's. Without this, the aggregation math refuses the
 * whole round (RoundFailedError) and the run ends.
 */
import { errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import type { Parameters } from "../core/records/legacy-types";
import type { ClientProxy } from "./client-proxy";
import { parametersSignature } from "./result-spill";

/** A result set aside: the client and why. */
export class IllShapedResultError extends Error {
  constructor(
    readonly nodeId: string,
    reason: string,
  ) {
    super(`result of node ${nodeId} set aside: ${reason}`);
    this.name = "IllShapedResultError";
  }
}

/**
 * Splits results into those that can be aggregated together and failures. The reference layout
 * is the one most results share; a tie goes to the current global parameters' layout (what
 * every client was sent), else to the layout seen first. Each result set aside is logged
 * with its node id (`serverapp.bad-result`).
 */
export function screenResults<R extends { parameters: Parameters }>(
  results: Array<[ClientProxy, R]>,
  global: Parameters,
  ctx: { logger: Logger; round: number; call: string },
): { kept: Array<[ClientProxy, R]>; rejected: IllShapedResultError[] } {
  const signatures: Array<string | Error> = results.map(([, res]) => {
    try {
      return parametersSignature(res.parameters);
    } catch (err) {
      return err instanceof Error ? err : new Error(errorMessage(err));
    }
  });
  let globalSignature: string | undefined;
  if (global.tensors.length > 0) {
    try {
      globalSignature = parametersSignature(global);
    } catch {
      globalSignature = undefined;
    }
  }
  const counts = new Map<string, number>();
  for (const sig of signatures) if (typeof sig === "string") counts.set(sig, (counts.get(sig) ?? 0) + 1);
  const best = Math.max(0, ...counts.values());
  const leaders = [...counts].filter(([, n]) => n === best).map(([sig]) => sig);
  const reference = globalSignature !== undefined && leaders.includes(globalSignature) ? globalSignature : leaders[0];
  const kept: Array<[ClientProxy, R]> = [];
  const rejected: IllShapedResultError[] = [];
  results.forEach((result, i) => {
    const sig = signatures[i]!;
    if (typeof sig === "string" && sig === reference) {
      kept.push(result);
      return;
    }
    const reason =
      typeof sig === "string"
        ? `arrays ${sig === "" ? "(none)" : sig} do not match ${reference === "" || reference === undefined ? "(none)" : reference}`
        : `undecodable parameters: ${sig.message}`;
    const error = new IllShapedResultError(result[0].cid, reason);
    ctx.logger.warn(
      { event: "serverapp.bad-result", nodeId: result[0].cid, round: ctx.round, call: ctx.call },
      `${ctx.call} on node ${result[0].cid}: ${error.message}; counted as a failure`,
    );
    rejected.push(error);
  });
  return { kept, rejected };
}
