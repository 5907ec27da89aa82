/**
 * Prometheus metrics for the SuperLink (a flwr-ts feature; Flower has none), through prom-client
 * with one Registry per SuperLink (never the global one, so several SuperLinks in one process
 * keep apart), served on `GET /metrics` of `--metrics-address`, with a status page on `/`
 * (src/superlink/status-page.ts) fed by `GET /status.json`:
 * - flwr_superlink_rpcs_total{service,method,code}: RPCs ended, by gRPC status name (REST calls
 *   under the gRPC method they stand for). Counted by a server interceptor, so refusals by the
 *   authentication layer are included. Calls ended by the transport before a status was
 *   produced (client cancel, deadline, oversized request) count as code="CANCELLED";
 *   undecodable requests as "INVALID_ARGUMENT" (src/transport/request-decoding.ts).
 * - flwr_superlink_rpc_duration_seconds{service,method,transport}: histogram of the same calls'
 *   time from arrival to status (a long-polled pull includes its wait), transport "grpc" or "rest".
 * - flwr_superlink_online_nodes: nodes seen alive (successful Ping; CreateNode too without
 *   authentication) whose ping interval (at most 1800 s) has not run out. Learned from traffic,
 *   so after a restart a node reappears on its next ping.
 * - flwr_superlink_task_ins_stored / flwr_superlink_task_res_stored: from State.
 * - flwr_superlink_task_ins_pushed_total / flwr_superlink_task_res_pushed_total: tasks accepted.
 * - flwr_superlink_runs_created_total: runs created since start.
 * - flwr_superlink_driver_received_bytes_total{method}: request bytes the Driver API decoded
 *   (what ServerApps uploaded; shared content counts once: docs/protocol.md, "Shared content").
 * - flwr_superlink_long_polls_waiting: pulls currently held open.
 * - prom-client's default process and Node.js metrics (process_resident_memory_bytes,
 *   process_cpu_seconds_total, nodejs_heap_size_used_bytes, nodejs_eventloop_lag_seconds, ...).
 */
import * as http from "node:http";
import * as grpc from "@grpc/grpc-js";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Logger } from "../core/logger";
import type { ReceiveAdmissionStats } from "../transport/receive-admission";
import { ConnectionError, errorMessage } from "../core/errors";
import { formatAddress, parseAddress } from "../core/address";
import { DEFAULT_PING_INTERVAL_BOUNDS } from "../core/ping-interval";
import { STATUS_PAGE_HEADERS, STATUS_PAGE_HTML } from "./status-page";

/** Values read from elsewhere at scrape time. */
export interface MetricsGauges {
  taskInsStored: number;
  taskResStored: number;
  longPollsWaiting: number;
}

/** Seconds; from a ping-sized call to a long-polled pull or a large upload. */
const RPC_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Runs the status page lists (the most recent ones). */
export const STATUS_RUNS_SHOWN = 50;
/** Online nodes the status page lists by id (the count is always complete). */
const STATUS_NODES_SHOWN = 200;

/** What the SuperLink saw of one run since it started (Driver traffic). */
export interface RunActivity {
  runId: string;
  fabId: string;
  fabVersion: string;
  createdAt: number;
  /** group_id of the latest TaskIns pushed: the round, for the legacy loop ("" when none). */
  lastGroupId: string;
  taskInsPushed: number;
  taskResPushed: number;
}

/** `GET /status.json`: everything the status page shows. Node and run ids are decimal strings. */
export interface StatusSnapshot {
  /** ms since epoch, of this snapshot. */
  time: number;
  startedAt: number;
  nodesOnline: number;
  /** Up to STATUS_NODES_SHOWN of them. */
  nodes: Array<{ nodeId: string; onlineUntil: number }>;
  runsCreated: number;
  runs: RunActivity[];
  taskInsStored: number;
  taskResStored: number;
  longPollsWaiting: number;
  /** Totals since start, for rates. */
  rpcsTotal: number;
  taskInsPushedTotal: number;
  taskResPushedTotal: number;
  /** RPCs ended, by "Service/Method" and status name. */
  rpcs: Array<{ method: string; code: string; count: number }>;
}

type Transport = "grpc" | "rest";

export interface SuperLinkMetricsOptions {
  now?: () => number;
  /** Read at scrape time (default all zero). */
  gauges?: () => MetricsGauges | Promise<MetricsGauges>;
}

export class SuperLinkMetrics {
  /** This SuperLink's registry: what `/metrics` serves. */
  readonly registry = new Registry();
  private readonly rpcsTotal: Counter<"service" | "method" | "code">;
  private readonly rpcDuration: Histogram<"service" | "method" | "transport">;
  private readonly runsCreatedTotal: Counter;
  private readonly taskInsPushedTotal: Counter;
  private readonly taskResPushedTotal: Counter;
  private readonly driverReceivedBytesTotal: Counter<"method">;
  /** Same counts as rpcsTotal, readable synchronously (tests, status page). */
  private readonly rpcs = new Map<string, number>();
  private rpcCountTotal = 0;
  private taskInsPushed = 0;
  private taskResPushed = 0;
  /** node id (decimal) -> online until (ms since epoch). */
  private readonly nodes = new Map<string, number>();
  private readonly runs = new Map<string, RunActivity>();
  private runsCreated = 0;
  private readonly now: () => number;
  private readonly startedAt: number;
  private gauges: () => MetricsGauges | Promise<MetricsGauges>;
  /**
   * False with node authentication: CreateNode carries no MAC and grants no liveness there, so
   * only successful Pings count a node as online.
   */
  createNodeMeansOnline = true;

  constructor(options: SuperLinkMetricsOptions = {}) {
    this.now = options.now ?? Date.now;
    this.startedAt = this.now();
    this.gauges = options.gauges ?? (() => ({ taskInsStored: 0, taskResStored: 0, longPollsWaiting: 0 }));
    const registers = [this.registry];
    this.rpcsTotal = new Counter({
      name: "flwr_superlink_rpcs_total",
      help: "RPCs ended, by service, method and gRPC status code.",
      labelNames: ["service", "method", "code"],
      registers,
    });
    this.rpcDuration = new Histogram({
      name: "flwr_superlink_rpc_duration_seconds",
      help: "Time from a call's arrival to its status, by service, method and transport (grpc or rest).",
      labelNames: ["service", "method", "transport"],
      buckets: RPC_DURATION_BUCKETS,
      registers,
    });
    // prom-client awaits an async collect, so a scrape shows the state's counts as they are now.
    const gauge = (name: string, help: string, read: () => number | Promise<number>): void => {
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          this.set(await read());
        },
      });
    };
    gauge("flwr_superlink_online_nodes", "Nodes within their announced ping interval.", () => this.onlineNodes());
    gauge(
      "flwr_superlink_task_ins_stored",
      "TaskIns held in state (delivered or not).",
      async () => (await this.gauges()).taskInsStored,
    );
    gauge(
      "flwr_superlink_task_res_stored",
      "TaskRes held in state (delivered or not).",
      async () => (await this.gauges()).taskResStored,
    );
    gauge(
      "flwr_superlink_long_polls_waiting",
      "Pull calls currently held open waiting for work.",
      async () => (await this.gauges()).longPollsWaiting,
    );
    this.runsCreatedTotal = new Counter({
      name: "flwr_superlink_runs_created_total",
      help: "Runs created since the SuperLink started.",
      registers,
    });
    this.taskInsPushedTotal = new Counter({
      name: "flwr_superlink_task_ins_pushed_total",
      help: "TaskIns accepted from ServerApps (PushTaskIns).",
      registers,
    });
    this.driverReceivedBytesTotal = new Counter({
      name: "flwr_superlink_driver_received_bytes_total",
      help: "Request bytes decoded by the Driver API, by method.",
      labelNames: ["method"],
      registers,
    });
    this.taskResPushedTotal = new Counter({
      name: "flwr_superlink_task_res_pushed_total",
      help: "TaskRes accepted from SuperNodes (PushTaskRes).",
      registers,
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /** Gauges and counters of the Fleet API's admission of large results (src/transport/receive-admission.ts). */
  watchLargeResultAdmission(stats: () => ReceiveAdmissionStats): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: (s: ReceiveAdmissionStats) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(stats()));
        },
      });
    };
    const counter = (name: string, help: string, read: (s: ReceiveAdmissionStats) => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read(stats()));
        },
      });
    };
    gauge(
      "flwr_superlink_large_result_bytes_held",
      "Bytes of large PushTaskRes messages admitted and still in memory (received, stored or being sent on).",
      (s) => s.heldBytes,
    );
    gauge("flwr_superlink_large_results_waiting", "Large PushTaskRes messages held back now.", (s) => s.waiting);
    counter(
      "flwr_superlink_large_results_held_back_total",
      "Large PushTaskRes messages that waited for the memory budget.",
      (s) => s.waited,
    );
    counter(
      "flwr_superlink_large_results_admitted_after_max_wait_total",
      "Large PushTaskRes messages read after the longest wait although the budget had not freed.",
      (s) => s.admittedAfterMaxWait,
    );
  }

  /** Where the state gauges come from (the SuperLink sets it once its state and hub exist). */
  setGauges(gauges: () => MetricsGauges | Promise<MetricsGauges>): void {
    this.gauges = gauges;
  }

  /**
   * Counts one ended RPC. `path` is the gRPC method path, e.g. "/flwr.proto.Fleet/Ping";
   * `durationSeconds` (when known) goes to the latency histogram.
   */
  recordRpc(path: string, code: grpc.status, durationSeconds?: number, transport: Transport = "grpc"): void {
    const m = /^\/flwr(?:_ts)?\.proto\.([^/]+)\/(.+)$/.exec(path);
    const service = m?.[1] ?? "unknown";
    const method = m?.[2] ?? path;
    const codeName = grpc.status[code] ?? String(code);
    const key = `${service}\u0000${method}\u0000${codeName}`;
    this.rpcs.set(key, (this.rpcs.get(key) ?? 0) + 1);
    this.rpcCountTotal += 1;
    this.rpcsTotal.inc({ service, method, code: codeName });
    if (durationSeconds !== undefined && Number.isFinite(durationSeconds) && durationSeconds >= 0) {
      this.rpcDuration.observe({ service, method, transport }, durationSeconds);
    }
  }

  /**
   * Counts one ended call of a non-gRPC transport (the REST Fleet API) under the gRPC method
   * `path` and the status `code` that says the same, and feeds the node trackers on success.
   */
  recordCall(path: string, code: grpc.status, request?: unknown, response?: unknown, durationSeconds?: number): void {
    this.recordRpc(path, code, durationSeconds, "rest");
    if (code === grpc.status.OK) this.observe(path, request, response);
  }

  /** The node answered CreateNode or Ping: online for `pingIntervalSeconds` from now. */
  nodeAlive(nodeId: bigint, pingIntervalSeconds: number): void {
    if (nodeId === 0n) return;
    // Bounded like the state's liveness, so a forged interval cannot keep the gauge up for years.
    const seconds = Math.min(Math.max(0, pingIntervalSeconds), DEFAULT_PING_INTERVAL_BOUNDS.max);
    this.nodes.set(nodeId.toString(), this.now() + (Number.isFinite(seconds) ? seconds : 0) * 1000);
  }

  /** The node was deleted or revoked. */
  nodeGone(nodeId: bigint): void {
    this.nodes.delete(nodeId.toString());
  }

  runCreated(): void {
    this.runsCreated += 1;
    this.runsCreatedTotal.inc();
  }

  /** Number of nodes still within their announced ping interval. Drops expired entries. */
  onlineNodes(): number {
    const t = this.now();
    for (const [id, until] of this.nodes) if (until <= t) this.nodes.delete(id);
    return this.nodes.size;
  }

  /** Count of one label set (for tests). */
  rpcCount(service: string, method: string, code: string): number {
    return this.rpcs.get(`${service}\u0000${method}\u0000${code}`) ?? 0;
  }

  /** Prometheus text exposition (prom-client's format for this registry). */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** What `/status.json` serves. */
  async status(): Promise<StatusSnapshot> {
    const gauges = await this.gauges();
    const nodesOnline = this.onlineNodes();
    const nodes = [...this.nodes]
      .slice(0, STATUS_NODES_SHOWN)
      .map(([nodeId, onlineUntil]) => ({ nodeId, onlineUntil }));
    const rpcs = [...this.rpcs].map(([key, count]) => {
      const [service, method, code] = key.split("\u0000") as [string, string, string];
      return { method: `${service}/${method}`, code, count };
    });
    rpcs.sort((a, b) =>
      a.method < b.method ? -1 : a.method > b.method ? 1 : a.code < b.code ? -1 : a.code > b.code ? 1 : 0,
    );
    return {
      time: this.now(),
      startedAt: this.startedAt,
      nodesOnline,
      nodes,
      runsCreated: this.runsCreated,
      runs: [...this.runs.values()].reverse().map((run) => ({ ...run })),
      ...gauges,
      rpcsTotal: this.rpcCountTotal,
      taskInsPushedTotal: this.taskInsPushed,
      taskResPushedTotal: this.taskResPushed,
      rpcs,
    };
  }

  /**
   * A copy of a Driver API service definition whose request decoders count the bytes they
   * decode (flwr_superlink_driver_received_bytes_total). The input is not modified.
   */
  withReceivedBytes<D extends grpc.ServiceDefinition>(definition: D): D {
    const result: Record<string, grpc.MethodDefinition<object, object>> = {};
    for (const [name, method] of Object.entries(definition) as Array<[string, grpc.MethodDefinition<object, object>]>) {
      const decode = method.requestDeserialize;
      const label = method.path.slice(method.path.lastIndexOf("/") + 1);
      result[name] = {
        ...method,
        requestDeserialize: (bytes: Buffer): object => {
          this.driverReceivedBytesTotal.inc({ method: label }, bytes.length);
          return decode(bytes);
        },
      };
    }
    return result as unknown as D;
  }

  /**
   * A grpc-js server interceptor that records every call's final status and duration and feeds
   * the node and run trackers from the (decoded) request and response messages.
   */
  interceptor(): grpc.ServerInterceptor {
    return (method, call) => {
      const startedAt = performance.now();
      let request: unknown;
      let response: unknown;
      let recorded = false;
      const record = (code: grpc.status): void => {
        if (recorded) return;
        recorded = true;
        this.recordRpc(method.path, code, (performance.now() - startedAt) / 1000);
        if (code === grpc.status.OK) this.observe(method.path, request, response);
      };
      const listener = new grpc.ServerListenerBuilder()
        .withOnReceiveMessage((message, next) => {
          request = message;
          next(message);
        })
        .withOnCancel(() => {
          record(grpc.status.CANCELLED);
        })
        .build();
      const responder = new grpc.ResponderBuilder()
        .withStart((next) => {
          next(listener);
        })
        .withSendMessage((message, next) => {
          response = message;
          next(message);
        })
        .withSendStatus((status, next) => {
          record(status.code);
          next(status);
        })
        .build();
      return new grpc.ServerInterceptingCall(call, responder);
    };
  }

  private observe(path: string, request: unknown, response: unknown): void {
    const req = (request ?? {}) as { node?: { nodeId?: unknown }; pingInterval?: unknown };
    switch (path) {
      case "/flwr.proto.Fleet/CreateNode": {
        const node = (response as { node?: { nodeId?: unknown } } | undefined)?.node;
        if (this.createNodeMeansOnline && typeof node?.nodeId === "bigint")
          this.nodeAlive(node.nodeId, Number(req.pingInterval ?? 0));
        break;
      }
      case "/flwr.proto.Fleet/Ping":
        if ((response as { success?: boolean } | undefined)?.success && typeof req.node?.nodeId === "bigint") {
          this.nodeAlive(req.node.nodeId, Number(req.pingInterval ?? 0));
        }
        break;
      case "/flwr.proto.Fleet/DeleteNode":
        if (typeof req.node?.nodeId === "bigint") this.nodeGone(req.node.nodeId);
        break;
      case "/flwr.proto.Driver/CreateRun": {
        const runId = (response as { runId?: unknown } | undefined)?.runId;
        if (runId === 0n) break;
        this.runCreated();
        if (typeof runId === "bigint") {
          const run = request as { fabId?: unknown; fabVersion?: unknown } | undefined;
          this.runActivity(
            runId,
            typeof run?.fabId === "string" ? run.fabId : "",
            typeof run?.fabVersion === "string" ? run.fabVersion : "",
          );
        }
        break;
      }
      case "/flwr.proto.Driver/PushTaskIns":
        this.countTasks(request, "taskInsList", "ins");
        break;
      case "/flwr_ts.proto.SharedContentDriver/PushSharedTaskIns": {
        const items = (request as { taskInsList?: Array<{ taskIns?: unknown }> } | undefined)?.taskInsList ?? [];
        this.countTasks({ taskInsList: items.map((i) => i.taskIns ?? {}) }, "taskInsList", "ins");
        break;
      }
      case "/flwr.proto.Fleet/PushTaskRes":
        this.countTasks(request, "taskResList", "res");
        break;
      default:
        break;
    }
  }

  private countTasks(request: unknown, field: "taskInsList" | "taskResList", kind: "ins" | "res"): void {
    const list = (request as Record<string, unknown> | undefined)?.[field];
    if (!Array.isArray(list)) return;
    for (const task of list as Array<{ runId?: unknown; groupId?: unknown }>) {
      if (kind === "ins") {
        this.taskInsPushed += 1;
        this.taskInsPushedTotal.inc();
      } else {
        this.taskResPushed += 1;
        this.taskResPushedTotal.inc();
      }
      if (typeof task.runId !== "bigint") continue;
      const run = this.runActivity(task.runId);
      if (kind === "ins") {
        run.taskInsPushed += 1;
        if (typeof task.groupId === "string") run.lastGroupId = task.groupId;
      } else {
        run.taskResPushed += 1;
      }
    }
  }

  /** The run's entry (created if unknown, e.g. a run from before a restart); keeps the latest STATUS_RUNS_SHOWN. */
  private runActivity(runId: bigint, fabId = "", fabVersion = ""): RunActivity {
    const key = runId.toString();
    let run = this.runs.get(key);
    if (run === undefined) {
      run = {
        runId: key,
        fabId,
        fabVersion,
        createdAt: this.now(),
        lastGroupId: "",
        taskInsPushed: 0,
        taskResPushed: 0,
      };
      this.runs.set(key, run);
      const oldest = this.runs.keys().next();
      if (this.runs.size > STATUS_RUNS_SHOWN && oldest.done !== true) this.runs.delete(oldest.value);
    }
    return run;
  }
}

export interface MetricsServer {
  port: number;
  /** HOST:PORT with the bound port. */
  address: string;
  close(): Promise<void>;
}

/**
 * Serves, at `address` (port 0 allowed): `/metrics` (Prometheus text), `/status.json` (the
 * status snapshot) and `/` (the status page, which polls `/status.json`); 404 elsewhere.
 */
export async function startMetricsServer(
  address: string,
  metrics: SuperLinkMetrics,
  logger: Logger,
): Promise<MetricsServer> {
  const { host, port } = parseAddress(address);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/metrics" && path !== "/status.json" && path !== "/") {
      res
        .writeHead(404, { "content-type": "text/plain" })
        .end("Not found: metrics are served on /metrics, the status page on /\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("Method not allowed\n");
      return;
    }
    const send = (contentType: string, body: string, headers: Record<string, string> = {}): void => {
      res.writeHead(200, {
        "content-type": contentType,
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
        ...headers,
      });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    const failed = (err: unknown): void => {
      logger.error({ err }, `metrics: rendering ${path} failed: ${errorMessage(err)}`);
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" }).end("metrics unavailable\n");
    };
    try {
      if (path === "/") send("text/html; charset=utf-8", STATUS_PAGE_HTML, STATUS_PAGE_HEADERS);
      else if (path === "/status.json") {
        void metrics.status().then((snapshot) => {
          send("application/json; charset=utf-8", JSON.stringify(snapshot));
        }, failed);
      } else {
        void metrics.render().then((text) => {
          send(metrics.registry.contentType, text);
        }, failed);
      }
    } catch (err) {
      failed(err);
    }
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(new ConnectionError(`Cannot serve metrics on ${address}: ${errorMessage(err)}`, { cause: err }));
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const bound = server.address();
  const boundPort = typeof bound === "object" && bound !== null ? bound.port : port;
  server.on("error", (err) => {
    logger.error({ err }, "metrics server error");
  });
  let closing: Promise<void> | undefined;
  return {
    port: boundPort,
    address: formatAddress({ host, port: boundPort }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
