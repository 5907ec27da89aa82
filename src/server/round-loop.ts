/**
 * The legacy strategy loop (Flower's `Server.fit` + `run_fl`, docs/protocol.md, "Strategy loop and History"): initial parameters,
 * then per round configure_fit -> concurrent fit -> aggregate_fit -> centralized evaluate ->
 * configure_evaluate -> concurrent evaluate -> aggregate_evaluate, recorded in a History.
 * A client that answers with an error, a non-OK status, or not before the round timeout counts
 * as a failure; so does a training result whose arrays cannot be aggregated with the others
 * (src/server/result-check.ts). What failures mean for aggregation is the strategy's decision
 * (acceptFailures).
 */
import { StatusCode } from "../core/constants";
import { FlwrError, InvalidConfigError, RoundFailedError, errorMessage } from "../core/errors";
import { ReleasedBytes } from "../core/garbage-collection";
import { type Logger, silentLogger } from "../core/logger";
import type { Metrics, Parameters, Status } from "../core/records/legacy-types";
import type { ClientManager } from "./client-manager";
import type { ClientCallOptions, ClientProxy } from "./client-proxy";
import { History } from "./history";
import { screenResults } from "./result-check";
import { ResultSpill, parametersBytes } from "./result-spill";
import { FedAdam } from "./strategy/fedadam";
import { FedAvg } from "./strategy/fedavg";
import { FedMedian } from "./strategy/fedmedian";
import type { EvaluateFailure, EvaluateResult, FitFailure, FitResult, Strategy } from "./strategy/strategy";

/** Flower's `ServerConfig`. */
export interface ServerConfig {
  /** Number of rounds. Default 1. */
  numRounds?: number;
  /** Per-client wait for an answer, in seconds (also the message TTL). Default: no limit. */
  roundTimeoutSeconds?: number;
}

export interface ResolvedServerConfig {
  numRounds: number;
  roundTimeoutSeconds: number | undefined;
}

/** Applies defaults and checks values; InvalidConfigError on nonsense. */
export function resolveServerConfig(config: ServerConfig = {}): ResolvedServerConfig {
  const numRounds = config.numRounds ?? 1;
  if (!Number.isInteger(numRounds) || numRounds < 0) {
    throw new InvalidConfigError(`ServerConfig.numRounds must be a non-negative integer, got ${numRounds}`);
  }
  const timeout = config.roundTimeoutSeconds;
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout > 0)) {
    throw new InvalidConfigError(
      `ServerConfig.roundTimeoutSeconds must be a positive number of seconds, got ${timeout}`,
    );
  }
  return { numRounds, roundTimeoutSeconds: timeout };
}

/** Flower's `ServerConfig.__repr__`: "num_rounds=3, no round_timeout". */
export function describeServerConfig(config: ResolvedServerConfig): string {
  const timeout =
    config.roundTimeoutSeconds === undefined ? "no round_timeout" : `round_timeout=${config.roundTimeoutSeconds}s`;
  return `num_rounds=${config.numRounds}, ${timeout}`;
}

export interface FitOutcome {
  history: History;
  /** Seconds from the start of round 1 to the end of the last round (Flower's measure). */
  elapsedSeconds: number;
}

export interface ServerOptions {
  clientManager: ClientManager;
  /** Default: FedAvg with Flower's defaults. */
  strategy?: Strategy;
  logger?: Logger;
  /**
   * Training results of at least `minBytes` of tensors are written to an unlinked temp file in
   * `dir` as they arrive, instead of being held in memory until the round's last one
   * (src/server/result-spill.ts). Only with a built-in strategy's aggregateFit, which reads them
   * back in chunks. Default: 16 MiB, the OS temp dir; `false` keeps every result in memory.
   */
  fitResultSpill?: { minBytes?: number; dir?: string } | false;
}

/** Default `fitResultSpill.minBytes`: smaller results cost less to hold than to write out. */
const DEFAULT_SPILL_MIN_BYTES = 16 * 1024 * 1024;

/**
 * Spilled result bytes after which garbage is collected: received messages are buffers V8 does
 * not count (src/core/garbage-collection.ts), and without a collection each 100 MB result stayed
 * in the RSS until long after its spill.
 */
const RECLAIM_MIN_BYTES = 64 * 1024 * 1024;

/** aggregateFit implementations that read results through arraySourcesOf (and keep none). */
const SPILL_AWARE_AGGREGATE_FIT: ReadonlySet<unknown> = new Set([
  // Compared by identity, never called unbound.
  /* eslint-disable @typescript-eslint/unbound-method */
  FedAvg.prototype.aggregateFit,
  FedMedian.prototype.aggregateFit,
  FedAdam.prototype.aggregateFit,
  /* eslint-enable @typescript-eslint/unbound-method */
]);

const EMPTY_PARAMETERS: Parameters = { tensors: [], tensorType: "numpy.ndarray" };

/** A failure of the connection to the SuperLink (as opposed to a failure of one client). */
function isConnectionError(err: unknown): boolean {
  return FlwrError.isFlwrError(err) && err.code === "FLWR_CONNECTION_FAILED";
}

function isOk(res: { status: Status }): boolean {
  return res.status.code === StatusCode.OK;
}

export class Server {
  /** The current global parameters. */
  parameters: Parameters = EMPTY_PARAMETERS;
  readonly strategy: Strategy;
  private readonly clients: ClientManager;
  private readonly logger: Logger;
  private readonly spill: { minBytes: number; dir: string | undefined } | undefined;
  private readonly releasedResults = new ReleasedBytes(RECLAIM_MIN_BYTES);

  constructor(options: ServerOptions) {
    this.clients = options.clientManager;
    this.strategy = options.strategy ?? new FedAvg();
    this.logger = options.logger ?? silentLogger();
    const spill = options.fitResultSpill ?? {};
    this.spill =
      // eslint-disable-next-line @typescript-eslint/unbound-method -- compared by identity
      spill !== false && SPILL_AWARE_AGGREGATE_FIT.has(this.strategy.aggregateFit)
        ? { minBytes: spill.minBytes ?? DEFAULT_SPILL_MIN_BYTES, dir: spill.dir }
        : undefined;
    this.strategy.setLogger?.(this.logger);
  }

  clientManager(): ClientManager {
    return this.clients;
  }

  /** Runs `numRounds` rounds. Rejects with the abort reason if `signal` aborts. */
  async fit(
    numRounds: number,
    timeoutSeconds: number | undefined,
    opts: { signal?: AbortSignal } = {},
  ): Promise<FitOutcome> {
    const { signal } = opts;
    const history = new History();
    this.logger.info("[INIT]");
    this.parameters = await this.getInitialParameters(timeoutSeconds, signal);
    this.logger.info("Evaluating initial global parameters");
    const initial = await this.strategy.evaluate(0, this.parameters);
    if (initial !== undefined) {
      const [loss, metrics] = initial;
      this.logger.info(
        { event: "serverapp.centralized-evaluation", round: 0, loss, metrics: metricsForLog(metrics) },
        `initial parameters (loss, other metrics): ${loss}, ${JSON.stringify(metricsForLog(metrics))}`,
      );
      history.addLossCentralized(0, loss);
      history.addMetricsCentralized(0, metrics);
    }

    const start = performance.now();
    for (let round = 1; round <= numRounds; round++) {
      signal?.throwIfAborted();
      const roundStart = performance.now();
      this.logger.info({ event: "serverapp.round", round }, `[ROUND ${round}]`);
      const fitOutcome = await this.fitRound(round, timeoutSeconds, signal);
      const summary: RoundSummary = { round, numRounds, seconds: 0, fitResults: 0, fitFailures: 0 };
      if (fitOutcome !== undefined) {
        const [parametersPrime, fitMetrics, fitResults, fitFailures] = fitOutcome;
        if (parametersPrime !== undefined) this.parameters = parametersPrime;
        history.addMetricsDistributedFit(round, fitMetrics);
        Object.assign(summary, { fitResults: fitResults.length, fitFailures: fitFailures.length, fitMetrics });
      }
      if (summary.fitResults === 0) {
        history.roundsWithoutFitResults.push(round);
        this.logger.warn(
          { event: "serverapp.round-without-fit-results", round, failures: summary.fitFailures },
          `Round ${round}: no successful fit result (${summary.fitFailures} failures); the model did not change`,
        );
      }

      const centralized = await this.strategy.evaluate(round, this.parameters);
      if (centralized !== undefined) {
        Object.assign(summary, { centralizedLoss: centralized[0], centralizedMetrics: centralized[1] });
        const [loss, metrics] = centralized;
        const elapsed = (performance.now() - start) / 1000;
        this.logger.info(
          { event: "serverapp.centralized-evaluation", round, loss, metrics: metricsForLog(metrics) },
          `fit progress: (${round}, ${loss}, ${JSON.stringify(metricsForLog(metrics))}, ${elapsed})`,
        );
        history.addLossCentralized(round, loss);
        history.addMetricsCentralized(round, metrics);
      }

      const evaluateOutcome = await this.evaluateRound(round, timeoutSeconds, signal);
      if (evaluateOutcome !== undefined) {
        const [loss, metrics, evalResults, evalFailures] = evaluateOutcome;
        Object.assign(summary, { evalResults: evalResults.length, evalFailures: evalFailures.length });
        if (loss !== undefined) {
          history.addLossDistributed(round, loss);
          history.addMetricsDistributed(round, metrics);
          Object.assign(summary, { evalLoss: loss, evalMetrics: metrics });
        }
      }
      summary.seconds = (performance.now() - roundStart) / 1000;
      logRoundSummary(this.logger, summary);
    }
    return { history, elapsedSeconds: (performance.now() - start) / 1000 };
  }

  /** One training round; undefined when no clients were selected. */
  async fitRound(
    round: number,
    timeoutSeconds: number | undefined,
    signal?: AbortSignal,
  ): Promise<[Parameters | undefined, Metrics, FitResult[], FitFailure[]] | undefined> {
    await this.clients.refresh?.();
    const instructions = await this.strategy.configureFit(round, this.parameters, this.clients);
    if (instructions.length === 0) {
      this.logger.info("configure_fit: no clients selected, cancel");
      return undefined;
    }
    this.logger.info(
      { event: "serverapp.configure-fit", round, sampled: instructions.length, available: this.clients.numAvailable() },
      `configure_fit: strategy sampled ${instructions.length} clients (out of ${this.clients.numAvailable()})`,
    );
    const spill = this.spill === undefined ? undefined : new ResultSpill(this.spill.dir);
    const minBytes = this.spill?.minBytes ?? 0;
    let parameters: Parameters | undefined;
    let metrics: Metrics;
    let results: FitResult[];
    let failures: FitFailure[];
    try {
      let received: FitResult[];
      [received, failures] = await this.runClients(
        instructions,
        async (client, ins, callOpts) => {
          const res = await client.fit(ins, callOpts);
          // Written out as it arrives; the received message is dropped with `res`.
          const bytes = parametersBytes(res.parameters);
          if (spill === undefined || !isOk(res) || bytes < minBytes) return res;
          const kept = { ...res, parameters: await spill.keep(res.parameters) };
          // The received message is garbage once this returns, but V8 does not see its size.
          this.releasedResults.add(bytes);
          return kept;
        },
        { timeoutSeconds, groupId: round, signal },
        "fit",
      );
      // One client's ill-shaped arrays are its failure, not the round's.
      const screened = screenResults(received, this.parameters, { logger: this.logger, round, call: "fit" });
      results = screened.kept;
      failures.push(...screened.rejected);
      this.logger.info(
        { event: "serverapp.aggregate-fit", round, results: results.length, failures: failures.length },
        `aggregate_fit: received ${results.length} results and ${failures.length} failures`,
      );
      // The last spilled result's message goes before the aggregate is allocated.
      this.releasedResults.collectNow();
      [parameters, metrics] = await this.strategy.aggregateFit(round, results, failures);
    } finally {
      await spill?.close();
    }
    if (parameters === undefined && results.length > 0) {
      this.logger.warn(
        { event: "serverapp.round-not-aggregated", round },
        `Round ${round}: the strategy did not aggregate the results (failures are not accepted); keeping the previous parameters`,
      );
    }
    return [parameters, metrics, results, failures];
  }

  /** One federated-evaluation round; undefined when no clients were selected. */
  async evaluateRound(
    round: number,
    timeoutSeconds: number | undefined,
    signal?: AbortSignal,
  ): Promise<[number | undefined, Metrics, EvaluateResult[], EvaluateFailure[]] | undefined> {
    await this.clients.refresh?.();
    const instructions = await this.strategy.configureEvaluate(round, this.parameters, this.clients);
    if (instructions.length === 0) {
      this.logger.info("configure_evaluate: no clients selected, skipping evaluation");
      return undefined;
    }
    this.logger.info(
      {
        event: "serverapp.configure-evaluate",
        round,
        sampled: instructions.length,
        available: this.clients.numAvailable(),
      },
      `configure_evaluate: strategy sampled ${instructions.length} clients (out of ${this.clients.numAvailable()})`,
    );
    const [results, failures] = await this.runClients(
      instructions,
      (client, ins, callOpts) => client.evaluate(ins, callOpts),
      { timeoutSeconds, groupId: round, signal },
      "evaluate",
    );
    this.logger.info(
      { event: "serverapp.aggregate-evaluate", round, results: results.length, failures: failures.length },
      `aggregate_evaluate: received ${results.length} results and ${failures.length} failures`,
    );
    const [loss, metrics] = await this.strategy.aggregateEvaluate(round, results, failures);
    return [loss, metrics, results, failures];
  }

  /**
   * Calls every client concurrently and sorts the outcomes as Flower does: OK status ->
   * results; non-OK status -> failures as (client, res); rejection -> failures as the error.
   * Outcomes keep the instruction order, so aggregation is deterministic.
   */
  private async runClients<Ins, Res extends { status: Status }>(
    instructions: Array<[ClientProxy, Ins]>,
    call: (client: ClientProxy, ins: Ins, opts: ClientCallOptions) => Promise<Res>,
    callOpts: ClientCallOptions,
    what: string,
  ): Promise<[Array<[ClientProxy, Res]>, Array<[ClientProxy, Res] | Error>]> {
    const settled = await Promise.allSettled(instructions.map(([client, ins]) => call(client, ins, callOpts)));
    callOpts.signal?.throwIfAborted();
    // Losing the SuperLink is not a client failure: it ends the run.
    for (const outcome of settled) {
      if (outcome.status === "rejected" && isConnectionError(outcome.reason)) throw outcome.reason;
    }
    const results: Array<[ClientProxy, Res]> = [];
    const failures: Array<[ClientProxy, Res] | Error> = [];
    settled.forEach((outcome, i) => {
      const client = instructions[i]![0];
      if (outcome.status === "rejected") {
        const err = outcome.reason instanceof Error ? outcome.reason : new Error(errorMessage(outcome.reason));
        this.logger.warn(
          { event: "serverapp.client-failed", nodeId: client.cid, round: callOpts.groupId, call: what },
          `${what} on node ${client.cid} failed: ${err.message}`,
        );
        failures.push(err);
      } else if (isOk(outcome.value)) {
        results.push([client, outcome.value]);
      } else {
        const { code, message } = outcome.value.status;
        this.logger.warn(
          {
            event: "serverapp.client-failed",
            nodeId: client.cid,
            round: callOpts.groupId,
            call: what,
            statusCode: code,
          },
          `${what} on node ${client.cid} returned status ${code}: ${message}`,
        );
        failures.push([client, outcome.value]);
      }
    });
    return [results, failures];
  }

  /** The strategy's initial parameters, or those of one random client (group "", round 0). */
  private async getInitialParameters(timeoutSeconds: number | undefined, signal?: AbortSignal): Promise<Parameters> {
    const fromStrategy = await this.strategy.initializeParameters(this.clients);
    if (fromStrategy !== undefined) {
      this.logger.info("Using initial global parameters provided by strategy");
      return fromStrategy;
    }
    this.logger.info("Requesting initial parameters from one random client");
    await this.clients.refresh?.();
    const [client] = await this.clients.sample(1);
    signal?.throwIfAborted();
    if (client === undefined) {
      throw new RoundFailedError("No client connected in time to provide the initial parameters");
    }
    let res;
    try {
      res = await client.getParameters(
        { config: {} },
        { ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}), groupId: 0, ...(signal ? { signal } : {}) },
      );
    } catch (err) {
      signal?.throwIfAborted();
      if (isConnectionError(err)) throw err;
      throw new RoundFailedError(`Could not get the initial parameters from node ${client.cid}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    if (isOk(res)) {
      this.logger.info("Received initial parameters from one random client");
    } else {
      this.logger.warn("Failed to receive initial parameters from the client. Empty initial parameters will be used.");
    }
    return res.parameters;
  }
}

/** What one round produced, for its one-line summary. */
interface RoundSummary {
  round: number;
  numRounds: number;
  seconds: number;
  fitResults: number;
  fitFailures: number;
  fitMetrics?: Metrics;
  evalResults?: number;
  evalFailures?: number;
  evalLoss?: number;
  evalMetrics?: Metrics;
  centralizedLoss?: number;
  centralizedMetrics?: Metrics;
}

/** A number short enough for a progress line (the History keeps the full value). */
function shortNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
}

function metricsText(metrics: Metrics | undefined): string[] {
  return Object.entries(metricsForLog(metrics ?? {})).map(
    ([k, v]) => `${k}=${typeof v === "number" ? shortNumber(v) : String(v)}`,
  );
}

/**
 * One info line per round: "Round 2/3 done in 1.52 s: fit 2 results, 0 failures (train_loss=0.41);
 * evaluate 2 results, 0 failures, loss 0.52 (accuracy=0.81)".
 */
function logRoundSummary(logger: Logger, s: RoundSummary): void {
  const parts = [`fit ${s.fitResults} results, ${s.fitFailures} failures${bracket(metricsText(s.fitMetrics))}`];
  if (s.evalResults !== undefined) {
    const loss = s.evalLoss !== undefined ? `, loss ${shortNumber(s.evalLoss)}` : "";
    parts.push(
      `evaluate ${s.evalResults} results, ${s.evalFailures ?? 0} failures${loss}${bracket(metricsText(s.evalMetrics))}`,
    );
  }
  if (s.centralizedLoss !== undefined) {
    parts.push(`centralized loss ${shortNumber(s.centralizedLoss)}${bracket(metricsText(s.centralizedMetrics))}`);
  }
  logger.info(
    {
      event: "serverapp.round-finished",
      round: s.round,
      seconds: Number(s.seconds.toFixed(3)),
      fitResults: s.fitResults,
      fitFailures: s.fitFailures,
      ...(s.fitMetrics !== undefined ? { fitMetrics: metricsForLog(s.fitMetrics) } : {}),
      ...(s.evalResults !== undefined ? { evalResults: s.evalResults, evalFailures: s.evalFailures ?? 0 } : {}),
      ...(s.evalLoss !== undefined ? { evalLoss: s.evalLoss } : {}),
      ...(s.evalMetrics !== undefined ? { evalMetrics: metricsForLog(s.evalMetrics) } : {}),
      ...(s.centralizedLoss !== undefined ? { centralizedLoss: s.centralizedLoss } : {}),
      ...(s.centralizedMetrics !== undefined ? { centralizedMetrics: metricsForLog(s.centralizedMetrics) } : {}),
    },
    `Round ${s.round}/${s.numRounds} done in ${s.seconds.toFixed(2)} s: ${parts.join("; ")}`,
  );
}

function bracket(items: string[]): string {
  return items.length > 0 ? ` (${items.join(", ")})` : "";
}

/** Metrics with bigint and bytes made JSON-safe for log lines. */
function metricsForLog(metrics: Metrics): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(metrics)) {
    out[k] = typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? `<${v.length} bytes>` : v;
  }
  return out;
}

/**
 * The lines Flower's `run_fl` logs after the last round: "[SUMMARY]", "Run finished N round(s)
 * in S.SSs", then each line of the History text prefixed with a tab.
 */
export function summaryLines(numRounds: number, elapsedSeconds: number, history: { toString(): string }): string[] {
  const lines = ["[SUMMARY]", `Run finished ${numRounds} round(s) in ${elapsedSeconds.toFixed(2)}s`];
  const text = history.toString();
  if (text !== "") {
    for (const line of text.replace(/\n$/, "").split("\n")) lines.push(`\t${line}`);
  }
  return lines;
}

/**
 * Flower's `run_fl`: `server.fit`, then the [SUMMARY] block, logged (one structured line) and
 * written line by line to `out` when given.
 */
export async function runFl(
  server: Server,
  config: ResolvedServerConfig,
  opts: { logger?: Logger; signal?: AbortSignal; out?: (line: string) => void } = {},
): Promise<FitOutcome> {
  const logger = opts.logger ?? silentLogger();
  const outcome = await server.fit(
    config.numRounds,
    config.roundTimeoutSeconds,
    opts.signal ? { signal: opts.signal } : {},
  );
  logger.info(
    {
      event: "serverapp.summary",
      rounds: config.numRounds,
      elapsedSeconds: Number(outcome.elapsedSeconds.toFixed(2)),
      history: outcome.history.toJSON(),
    },
    `[SUMMARY] Run finished ${config.numRounds} round(s) in ${outcome.elapsedSeconds.toFixed(2)}s`,
  );
  if (opts.out)
    for (const line of summaryLines(config.numRounds, outcome.elapsedSeconds, outcome.history)) opts.out(line);
  return outcome;
}
