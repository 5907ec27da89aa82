/** Shared pieces of the SuperNode tests: a log sink, a test Driver, and SuperLink starters. */
import { Allowlist } from "../../src/auth/allowlist";
import { loadKeyPairFiles } from "../../src/auth/keys";
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { createLogger, type Logger } from "../../src/core/logger";
import { messageFromTaskRes, messageToTaskIns } from "../../src/core/records/serde";
import { RecordSet, type Message } from "../../src/core/records/types";
import { DriverClient } from "../../src/proto/flwr/proto/driver";
import type { TaskRes } from "../../src/proto/flwr/proto/task";
import type { Scalar } from "../../src/proto/flwr/proto/transport";
import { type SuperLinkConfig, type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { createClient, unaryCall } from "../../src/transport/channel";
import { channelCredentials, readServerTlsFiles } from "../../src/transport/tls";
import type { Fixtures } from "../helpers/fixtures";

export type LogLine = Record<string, unknown> & { msg?: string; event?: string };

/** A pino logger whose JSON lines are kept (parsed) in `lines`. */
export function memoryLogger(level = "debug"): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line) as LogLine);
      cb();
    },
  });
  return { logger: createLogger({ level, base: { component: "supernode" } }, sink), lines };
}

/** Polls `predicate` until it holds (bounded by the test timeout, checked every 10 ms). */
export async function until(
  predicate: () => boolean | Promise<boolean>,
  what = "condition",
  limitMs = 45_000,
): Promise<void> {
  const started = Date.now();
  while (!(await predicate())) {
    if (Date.now() - started > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface TestSuperLinkOptions {
  fixtures?: Fixtures;
  tls?: boolean;
  auth?: boolean;
  /** Reuse fixed addresses (a restart on the ports a previous instance got). */
  fleetApiAddress?: string;
  driverApiAddress?: string;
  longPollMs?: number;
}

/** A real SuperLink on 127.0.0.1 ephemeral ports (TLS and auth from the fixtures when asked). */
export async function startTestSuperLink(options: TestSuperLinkOptions): Promise<SuperLinkHandle> {
  const f = options.fixtures;
  const config: SuperLinkConfig = {
    driverApiAddress: options.driverApiAddress ?? "127.0.0.1:0",
    fleetApiAddress: options.fleetApiAddress ?? "127.0.0.1:0",
    database: ":flwr-in-memory-state:",
    ...(options.longPollMs !== undefined ? { longPollMs: options.longPollMs } : {}),
  };
  if (options.tls || options.auth) {
    if (!f) throw new Error("TLS needs fixtures");
    config.tls = readServerTlsFiles({ caCertFile: f.caCert, certFile: f.serverCert, keyFile: f.serverKey });
  }
  if (options.auth) {
    config.auth = {
      allowlist: Allowlist.fromCsvFile(f!.allowlistCsv),
      superlinkKeys: loadKeyPairFiles(f!.superlinkPrivateKey, f!.superlinkPublicKey),
      watchAllowlist: false,
    };
  }
  return startSuperLink(config, { logger: memoryLogger("warn").logger });
}

/** The ServerApp's side, reduced to what the tests need: create runs, push messages, pull replies. */
export class TestDriver {
  private readonly client: DriverClient;

  constructor(address: string, caCert?: Buffer) {
    this.client = createClient(
      DriverClient,
      address,
      caCert ? channelCredentials({ rootCertificates: caCert }) : channelCredentials({ insecure: true }),
    );
  }

  async createRun(
    overrideConfig: Map<string, Scalar> = new Map(),
    fab: { fabId: string; fabVersion: string } = { fabId: "", fabVersion: "" },
  ): Promise<bigint> {
    const { response } = await unaryCall(this.client.createRun.bind(this.client), {
      fabId: fab.fabId,
      fabVersion: fab.fabVersion,
      overrideConfig,
    });
    return response.runId;
  }

  async nodes(runId: bigint): Promise<bigint[]> {
    const { response } = await unaryCall(this.client.getNodes.bind(this.client), { runId });
    return response.nodes.map((n) => n.nodeId);
  }

  async waitForNode(runId: bigint, nodeId: bigint): Promise<void> {
    const started = Date.now();
    while (!(await this.nodes(runId)).includes(nodeId)) {
      if (Date.now() - started > 30_000) throw new Error(`node ${nodeId} never came online`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Pushes one message (as the ServerApp's driver builds it) and returns its task id. */
  async push(
    runId: bigint,
    nodeId: bigint,
    messageType: string,
    content: RecordSet | { code: number; reason: string } = new RecordSet(),
    groupId = "1",
  ): Promise<{ taskId: string; createdAt: number }> {
    const createdAt = Date.now() / 1000;
    const message: Message = {
      metadata: {
        runId,
        messageId: "",
        srcNodeId: 0n,
        dstNodeId: nodeId,
        replyToMessage: "",
        groupId,
        ttl: 3600,
        messageType,
        createdAt,
      },
      ...(content instanceof RecordSet ? { content } : { error: content }),
    };
    const { response } = await unaryCall(this.client.pushTaskIns.bind(this.client), {
      taskInsList: [messageToTaskIns(message)],
    });
    const taskId = response.taskIds[0];
    if (!taskId) throw new Error("the SuperLink did not store the TaskIns");
    return { taskId, createdAt };
  }

  /** Pulls until the reply to `taskId` arrives. */
  async reply(taskId: string): Promise<{ taskRes: TaskRes; message: Message }> {
    const started = Date.now();
    for (;;) {
      const { response } = await unaryCall(this.client.pullTaskRes.bind(this.client), {
        node: { nodeId: 0n, anonymous: true },
        taskIds: [taskId],
      });
      const taskRes = response.taskResList[0];
      if (taskRes !== undefined) return { taskRes, message: messageFromTaskRes(taskRes) };
      if (Date.now() - started > 30_000) throw new Error(`no reply to ${taskId}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.client.close();
  }
}

/** A ServiceError-shaped value for tests that need one. */
export function serviceError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), {
    code,
    details,
    metadata: new grpc.Metadata(),
  });
}
