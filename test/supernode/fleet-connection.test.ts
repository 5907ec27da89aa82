/**
 * FleetConnection against an in-test Fleet server over real TLS that verifies auth tokens the way
 * a Python SuperLink on the C++ protobuf backend does: over a lexicographic-order re-encoding
 * (docs/protocol.md, "Canonical encoding"). Our SuperNode signs in upb order first; for a request whose maps have
 * prefix-related keys the two orders differ, so the first push is refused and re-sent.
 */
import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { base64UrlPadded, decodeBase64UrlLikePython, deriveHmacKey, verifyAuthToken } from "../../src/auth/crypto";
import { loadPrivateKeyFile, publicPemOf } from "../../src/auth/keys";
import { AUTH_TOKEN_HEADER, PUBLIC_KEY_HEADER } from "../../src/core/constants";
import { recordSetToProto } from "../../src/core/records/serde";
import { RecordSet } from "../../src/core/records/types";
import { type MapOrder, canonicalEncode } from "../../src/core/wire/canonical";
import { FleetService, type FleetServer, type PushTaskResRequest } from "../../src/proto/flwr/proto/fleet";
import { TaskRes } from "../../src/proto/flwr/proto/task";
import { startGrpcServer, type RunningGrpcServer } from "../../src/transport/grpc-server";
import { readServerTlsFiles, serverCredentials } from "../../src/transport/tls";
import { FleetConnection } from "../../src/supernode/fleet-connection";
import { generateFixtures, type Fixtures } from "../helpers/fixtures";
import { memoryLogger } from "./helpers";

const NODE_ID = 4242n;

let fixtures: Fixtures;
beforeAll(() => {
  fixtures = generateFixtures(1);
});
afterAll(() => fixtures?.cleanup());

interface PushAttempt {
  accepted: boolean;
  order: MapOrder | "none";
}

/** A Fleet server that accepts auth tokens computed over `verifyOrder` only. */
async function startStrictFleet(
  verifyOrder: MapOrder,
  options: { refuseAll?: boolean } = {},
): Promise<{ server: RunningGrpcServer; pushes: PushAttempt[]; peers: string[] }> {
  const serverKey = loadPrivateKeyFile(fixtures.superlinkPrivateKey);
  const serverPem = publicPemOf(serverKey);
  const pushes: PushAttempt[] = [];
  const peers: string[] = [];
  const hmacKeyOf = (md: grpc.Metadata): Buffer => {
    const header = md.get(PUBLIC_KEY_HEADER)[0] as string;
    return deriveHmacKey(serverKey, decodeBase64UrlLikePython(header).toString("latin1"));
  };
  const verified = (md: grpc.Metadata, payload: Uint8Array): boolean => {
    const token = md.get(AUTH_TOKEN_HEADER)[0];
    return token !== undefined && verifyAuthToken(hmacKeyOf(md), payload, decodeBase64UrlLikePython(token));
  };
  const implementation: FleetServer = {
    createNode: (call, callback) => {
      peers.push(call.getPeer());
      const md = new grpc.Metadata();
      md.set(PUBLIC_KEY_HEADER, base64UrlPadded(Buffer.from(serverPem, "latin1")));
      call.sendMetadata(md);
      callback(null, { node: { nodeId: NODE_ID, anonymous: false } });
    },
    pushTaskRes: (call, callback) => {
      const request: PushTaskResRequest = call.request;
      const ok = verified(call.metadata, canonicalEncode("PushTaskResRequest", request, verifyOrder));
      const upbOk = verified(call.metadata, canonicalEncode("PushTaskResRequest", request, "upb"));
      const lexOk = verified(call.metadata, canonicalEncode("PushTaskResRequest", request, "lexicographic"));
      pushes.push({ accepted: ok, order: upbOk && lexOk ? "none" : upbOk ? "upb" : lexOk ? "lexicographic" : "none" });
      if (!ok || options.refuseAll) {
        callback({ code: grpc.status.UNAUTHENTICATED, details: "Access denied" });
        return;
      }
      callback(null, { reconnect: { reconnect: 5n }, results: new Map([["task-1", 0]]) });
    },
    deleteNode: (_call, callback) => callback(null, {}),
    ping: (_call, callback) => callback(null, { success: true }),
    pullTaskIns: (_call, callback) => callback(null, { reconnect: undefined, taskInsList: [] }),
    getRun: (_call, callback) => callback(null, { run: undefined }),
  };
  const tls = readServerTlsFiles({
    caCertFile: fixtures.caCert,
    certFile: fixtures.serverCert,
    keyFile: fixtures.serverKey,
  });
  const server = await startGrpcServer("127.0.0.1:0", serverCredentials(tls), [
    { definition: FleetService, implementation },
  ]);
  return { server, pushes, peers };
}

function taskRes(metrics: Record<string, number>): TaskRes {
  const rs = new RecordSet();
  rs.configsRecords.set("fitres.metrics", metrics);
  return TaskRes.fromPartial({
    taskId: "",
    groupId: "1",
    runId: 1n,
    task: {
      producer: { nodeId: NODE_ID, anonymous: false },
      consumer: { nodeId: 0n, anonymous: true },
      createdAt: Date.now() / 1000,
      ttl: 3600,
      ancestry: ["4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a"],
      taskType: "train",
      recordset: recordSetToProto(rs),
    },
  });
}

async function connect(
  server: RunningGrpcServer,
  logger = memoryLogger(),
): Promise<{ connection: FleetConnection; lines: typeof logger.lines }> {
  const connection = new FleetConnection({
    superlink: `127.0.0.1:${server.port}`,
    rootCertificates: fixtures.read(fixtures.caCert),
    auth: SuperNodeAuth.fromFiles(fixtures.clientPrivateKeys[0]!, fixtures.clientPublicKeys[0]!),
    channelOptions: { "grpc.ssl_target_name_override": "localhost" },
    logger: logger.logger,
  });
  return { connection, lines: logger.lines };
}

describe("FleetConnection credentials", () => {
  it("connections with the same CA bundle share its TLS credentials but each has a connection of its own", async () => {
    const { server, peers } = await startStrictFleet("upb");
    const first = await connect(server);
    const second = await connect(server);
    try {
      await first.connection.createNode(30);
      await second.connection.createNode(30);
      expect(peers).toHaveLength(2);
      expect(new Set(peers).size).toBe(2);
    } finally {
      first.connection.close();
      second.connection.close();
      await server.close(0);
    }
  });
});

describe("FleetConnection with node authentication", () => {
  it("re-sends a PushTaskRes in lexicographic map order when the SuperLink verifies that order, and keeps it", async () => {
    const { server, pushes } = await startStrictFleet("lexicographic");
    const { connection, lines } = await connect(server);
    try {
      const node = await connection.createNode(30);
      expect(node).toEqual({ nodeId: NODE_ID, anonymous: false });
      // "loss" is a proper prefix of "loss_avg": upb and lexicographic orders differ.
      const response = await connection.pushTaskRes(taskRes({ loss: 1, loss_avg: 2 }));
      expect(response.results.get("task-1")).toBe(0);
      expect(pushes).toEqual([
        { accepted: false, order: "upb" },
        { accepted: true, order: "lexicographic" },
      ]);
      expect(lines.some((l) => l.event === "supernode.map-order" && l["order"] === "lexicographic")).toBe(true);
      // The next push goes out in the order that worked.
      await connection.pushTaskRes(taskRes({ acc: 1, acc_top5: 2 }));
      expect(pushes[2]).toEqual({ accepted: true, order: "lexicographic" });
    } finally {
      connection.close();
      await server.close(0);
    }
  });

  it("signs in upb order, which a upb SuperLink accepts at the first try", async () => {
    const { server, pushes } = await startStrictFleet("upb");
    const { connection } = await connect(server);
    try {
      await connection.createNode(30);
      await connection.pushTaskRes(taskRes({ loss: 1, loss_avg: 2 }));
      expect(pushes).toEqual([{ accepted: true, order: "upb" }]);
    } finally {
      connection.close();
      await server.close(0);
    }
  });

  it("sends a push without prefix-related keys once: both orders agree, a refusal is final", async () => {
    const { server, pushes } = await startStrictFleet("lexicographic");
    const { connection } = await connect(server);
    try {
      await connection.createNode(30);
      const ok = await connection.pushTaskRes(taskRes({ loss: 1, accuracy: 2 }));
      expect(ok.results.get("task-1")).toBe(0);
      expect(pushes).toEqual([{ accepted: true, order: "none" }]);

      const refusing = await startStrictFleet("lexicographic", { refuseAll: true });
      const second = await connect(refusing.server);
      try {
        await second.connection.createNode(30);
        await expect(second.connection.pushTaskRes(taskRes({ loss: 1, accuracy: 2 }))).rejects.toMatchObject({
          code: grpc.status.UNAUTHENTICATED,
        });
        expect(refusing.pushes).toHaveLength(1);
      } finally {
        second.connection.close();
        await refusing.server.close(0);
      }
    } finally {
      connection.close();
      await server.close(0);
    }
  });

  it("cancels a call in flight when its signal aborts", async () => {
    const held: Array<() => void> = [];
    const implementation = {
      pullTaskIns: (_call: unknown, callback: (e: null, r: object) => void) => {
        held.push(() => callback(null, { taskInsList: [] }));
      },
    };
    const server = await startGrpcServer("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), [
      { definition: FleetService, implementation: implementation },
    ]);
    const connection = new FleetConnection({ superlink: `127.0.0.1:${server.port}`, insecure: true });
    try {
      const controller = new AbortController();
      const pending = connection.pullTaskIns({ nodeId: 1n, anonymous: false }, { signal: controller.signal });
      while (held.length === 0) await new Promise((r) => setTimeout(r, 5));
      controller.abort();
      await expect(pending).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    } finally {
      held.forEach((release) => release());
      connection.close();
      await server.close(0);
    }
  });
});
