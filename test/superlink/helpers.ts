/** Builders and small utilities shared by the SuperLink tests. */
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { LONG_POLL_HEADER } from "../../src/core/constants";
import { createLogger, type Logger } from "../../src/core/logger";
import { DriverClient } from "../../src/proto/flwr/proto/driver";
import { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { TaskIns, TaskRes } from "../../src/proto/flwr/proto/task";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { type SuperLinkConfig, type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { createClient, unaryCall } from "../../src/transport/channel";
import { channelCredentials, readServerTlsFiles } from "../../src/transport/tls";
import type { Fixtures } from "../helpers/fixtures";

/** A TaskIns that passes Flower's validator, addressed to `nodeId` in `runId`. */
export function validTaskIns(
  runId: bigint,
  nodeId: bigint,
  overrides: { taskType?: string; groupId?: string } = {},
): TaskIns {
  return TaskIns.fromPartial({
    taskId: "",
    groupId: overrides.groupId ?? "1",
    runId,
    task: {
      producer: { nodeId: 0n, anonymous: true },
      consumer: { nodeId, anonymous: false },
      createdAt: Date.now() / 1000,
      deliveredAt: "",
      pushedAt: Date.now() / 1000,
      ttl: 3600,
      ancestry: [],
      taskType: overrides.taskType ?? "train",
      recordset: {},
    },
  });
}

/** A TaskRes from `nodeId` answering TaskIns `taskInsId`, as a SuperNode sends it. */
export function validTaskRes(runId: bigint, nodeId: bigint, taskInsId: string): TaskRes {
  return TaskRes.fromPartial({
    taskId: "",
    groupId: "1",
    runId,
    task: {
      producer: { nodeId, anonymous: false },
      consumer: { nodeId: 0n, anonymous: true },
      createdAt: Date.now() / 1000,
      deliveredAt: "",
      pushedAt: Date.now() / 1000,
      ttl: 3600,
      ancestry: [taskInsId],
      taskType: "train",
      recordset: {},
    },
  });
}

/** A pino logger whose JSON lines are collected in `lines` (parsed). */
export function memoryLogger(level = "debug"): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: createLogger({ level, base: { component: "test" } }, sink), lines };
}

/** Channel credentials for a SuperLink started with the fixture certificate (or plaintext). */
export function clientCredentials(caCert?: Buffer): grpc.ChannelCredentials {
  return caCert ? channelCredentials({ rootCertificates: caCert }) : channelCredentials({ insecure: true });
}

/** The fixture certificate names "localhost"; connect to 127.0.0.1 without an IP-address SNI. */
export const TLS_CHANNEL_OPTIONS: grpc.ChannelOptions = { "grpc.ssl_target_name_override": "localhost" };

export function fleetClient(address: string, caCert?: Buffer): FleetClient {
  return createClient(FleetClient, address, clientCredentials(caCert), caCert ? TLS_CHANNEL_OPTIONS : {});
}

export function driverClient(address: string, caCert?: Buffer): DriverClient {
  return createClient(DriverClient, address, clientCredentials(caCert), caCert ? TLS_CHANNEL_OPTIONS : {});
}

/** Polls `predicate` on the event loop until it holds (bounded by the test timeout). */
export async function until(predicate: () => boolean | Promise<boolean>, what = "condition"): Promise<void> {
  const started = Date.now();
  while (!(await predicate())) {
    if (Date.now() - started > 30_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The gRPC status of a failed promise (throws if it succeeded). */
export async function statusOf(p: Promise<unknown>): Promise<{ code: grpc.status; details: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, details: e.details };
  }
  throw new Error("expected the call to fail");
}

/** Metadata that opts a Fleet pull in to long polling (as our SuperNode does), up to 60 s. */
export function longPollOptIn(metadata: grpc.Metadata = new grpc.Metadata()): grpc.Metadata {
  metadata.set(LONG_POLL_HEADER, "60000");
  return metadata;
}

/**
 * Registers as an authenticated SuperNode does: CreateNode, then the first MAC-checked call (a
 * Ping), which brings the new node online and proves the connection's key.
 */
/**
 * CreateNode (ping interval 30 s) as the SuperNode `auth` speaks for, which then takes the
 * SuperLink's public key from the answer's metadata; the node id and that metadata.
 */
export async function authenticatedCreateNode(
  fleet: FleetClient,
  auth: SuperNodeAuth,
): Promise<{ nodeId: bigint; headers: grpc.Metadata }> {
  const request = { pingInterval: 30 };
  const { response, headers } = await unaryCall(
    fleet.createNode.bind(fleet),
    request,
    auth.metadataFor("CreateNodeRequest", request),
  );
  auth.acceptCreateNodeMetadata(headers);
  return { nodeId: response.node!.nodeId, headers };
}

export async function registerAuthenticated(
  fleet: FleetClient,
  privateKeyFile: string,
  publicKeyFile: string,
): Promise<{ auth: SuperNodeAuth; nodeId: bigint; pinged: boolean }> {
  const auth = SuperNodeAuth.fromFiles(privateKeyFile, publicKeyFile);
  const { nodeId } = await authenticatedCreateNode(fleet, auth);
  const ping = { node: { nodeId, anonymous: false }, pingInterval: 30 };
  const pinged = await unaryCall(fleet.ping.bind(fleet), ping, auth.metadataFor("PingRequest", ping));
  return { auth, nodeId, pinged: pinged.response.success };
}

/**
 * An in-memory SuperLink on loopback ports (0) with the fixtures' server certificate, held pulls
 * of 60 s, and `extra` on top.
 */
export function startTlsSuperLink(
  fx: Fixtures,
  deps: Parameters<typeof startSuperLink>[1],
  extra: Partial<SuperLinkConfig> = {},
): Promise<SuperLinkHandle> {
  return startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
      longPollMs: 60_000,
      ...extra,
    },
    deps,
  );
}
