/**
 * A few Prometheus metrics for the SuperLink (a flwr-ts feature; Flower has none), served as
 * text on `GET /metrics` when `--metrics-address` is given:
 * - flwr_superlink_rpcs_total{service,method,code}: RPCs ended, by gRPC status name. Counted by a
 *   server interceptor, so refusals by the authentication layer are included. Calls ended by the
 *   transport before a status was produced (client cancel, deadline, oversized request) count
 *   as code="CANCELLED"; undecodable requests as "INVALID_ARGUMENT" (src/transport/request-decoding.ts).
 * - flwr_superlink_online_nodes: nodes seen alive (successful Ping; CreateNode too without
 *   authentication) whose ping interval (at most 1800 s) has not run out. Learned from traffic, so after a restart a node reappears on its
 *   next ping.
 * - flwr_superlink_task_ins_stored / flwr_superlink_task_res_stored: from State.
 * - flwr_superlink_runs_created_total: runs created since start.
 * - flwr_superlink_long_polls_waiting: pulls currently held open.
 */
import * as http from "node:http";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../core/logger";
import { ConnectionError, errorMessage } from "../core/errors";
import { formatAddress, parseAddress } from "../core/address";
import { DEFAULT_PING_INTERVAL_BOUNDS } from "../core/ping-interval";

/** Values read from elsewhere at scrape time. */
export interface MetricsGauges {
  taskInsStored: number;
  taskResStored: number;
  longPollsWaiting: number;
}

export class SuperLinkMetrics {
  private readonly rpcs = new Map<string, number>();
  /** node id (decimal) -> online until (ms since epoch). */
  private readonly nodes = new Map<string, number>();
  private runsCreated = 0;
  /**
   * False with node authentication: CreateNode carries no MAC and grants no liveness there, so
   * only successful Pings count a node as online.
   */
  createNodeMeansOnline = true;

  constructor(private readonly now: () => number = Date.now) {}

  /** Counts one ended RPC. `path` is the gRPC method path, e.g. "/flwr.proto.Fleet/Ping". */
  recordRpc(path: string, code: grpc.status): void {
    const m = /^\/flwr\.proto\.([^/]+)\/(.+)$/.exec(path);
    const service = m?.[1] ?? "unknown";
    const method = m?.[2] ?? path;
    const key = `${service}\u0000${method}\u0000${grpc.status[code] ?? String(code)}`;
    this.rpcs.set(key, (this.rpcs.get(key) ?? 0) + 1);
  }

  /**
   * Counts one ended call of a non-gRPC transport (the REST Fleet API) under the gRPC method
   * `path` and the status `code` that says the same, and feeds the node trackers on success.
   */
  recordCall(path: string, code: grpc.status, request?: unknown, response?: unknown): void {
    this.recordRpc(path, code);
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

  /**
   * A grpc-js server interceptor that records every call's final status and feeds the node and
   * run trackers from the (decoded) request and response messages.
   */
  interceptor(): grpc.ServerInterceptor {
    return (method, call) => {
      let request: unknown;
      let response: unknown;
      let recorded = false;
      const record = (code: grpc.status): void => {
        if (recorded) return;
        recorded = true;
        this.recordRpc(method.path, code);
        if (code === grpc.status.OK) this.observe(method.path, request, response);
      };
      const listener = new grpc.ServerListenerBuilder()
        .withOnReceiveMessage((message, next) => {
          request = message;
          next(message);
        })
        .withOnCancel(() => record(grpc.status.CANCELLED))
        .build();
      const responder = new grpc.ResponderBuilder()
        .withStart((next) => next(listener))
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
        if (this.createNodeMeansOnline && typeof node?.nodeId === "bigint") this.nodeAlive(node.nodeId, Number(req.pingInterval ?? 0));
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
      case "/flwr.proto.Driver/CreateRun":
        if ((response as { runId?: unknown } | undefined)?.runId !== 0n) this.runCreated();
        break;
      default:
        break;
    }
  }

  /** Prometheus text exposition format 0.0.4. */
  render(gauges: MetricsGauges): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: Array<[string, number]>): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
    };
    const rpcSamples: Array<[string, number]> = [...this.rpcs.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, n]) => {
        const [service, method, code] = key.split("\u0000");
        return [`{service="${esc(service!)}",method="${esc(method!)}",code="${esc(code!)}"}`, n];
      });
    metric("flwr_superlink_rpcs_total", "counter", "RPCs ended, by service, method and gRPC status code.", rpcSamples);
    metric("flwr_superlink_online_nodes", "gauge", "Nodes within their announced ping interval.", [["", this.onlineNodes()]]);
    metric("flwr_superlink_task_ins_stored", "gauge", "TaskIns held in state (delivered or not).", [["", gauges.taskInsStored]]);
    metric("flwr_superlink_task_res_stored", "gauge", "TaskRes held in state (delivered or not).", [["", gauges.taskResStored]]);
    metric("flwr_superlink_runs_created_total", "counter", "Runs created since the SuperLink started.", [["", this.runsCreated]]);
    metric("flwr_superlink_long_polls_waiting", "gauge", "Pull calls currently held open waiting for work.", [
      ["", gauges.longPollsWaiting],
    ]);
    // The standard process metrics, so memory and CPU need no /proc access to watch.
    const memory = process.memoryUsage();
    const cpu = process.cpuUsage();
    metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [["", memory.rss]]);
    metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", [
      ["", (cpu.user + cpu.system) / 1e6],
    ]);
    metric("nodejs_heap_size_used_bytes", "gauge", "V8 heap in use, in bytes.", [["", memory.heapUsed]]);
    metric("nodejs_external_memory_bytes", "gauge", "Memory of Buffers and other objects outside the V8 heap, in bytes.", [
      ["", memory.external],
    ]);
    return lines.join("\n") + "\n";
  }
}

function esc(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

export interface MetricsServer {
  port: number;
  /** HOST:PORT with the bound port. */
  address: string;
  close(): Promise<void>;
}

/** Serves `render()` on GET /metrics (404 elsewhere) at `address` (port 0 allowed). */
export async function startMetricsServer(
  address: string,
  render: () => string | Promise<string>,
  logger: Logger,
): Promise<MetricsServer> {
  const { host, port } = parseAddress(address);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("Not found: metrics are served on /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("Method not allowed\n");
      return;
    }
    const head = req.method === "HEAD";
    Promise.resolve()
      .then(render)
      .then(
        (body) => {
          res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
          res.end(head ? undefined : body);
        },
        (err: unknown) => {
          logger.error({ err }, "metrics: rendering failed");
          res.writeHead(500, { "content-type": "text/plain" }).end("metrics unavailable\n");
        },
      );
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
  server.on("error", (err) => logger.error({ err }, "metrics server error"));
  let closing: Promise<void> | undefined;
  return {
    port: boundPort,
    address: formatAddress({ host, port: boundPort }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
