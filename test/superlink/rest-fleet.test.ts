/**
 * The REST Fleet API in-process over real HTTPS on 127.0.0.1:0 (certificates from
 * scripts/generate.sh), with node authentication on, driven by raw node:https requests: what
 * strangers, browsers and broken clients get.
 */
import { Allowlist } from "../../src/auth/allowlist";
import { loadKeyPairFiles } from "../../src/auth/keys";
import * as https from "node:https";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { IN_MEMORY_DATABASE, LONG_POLL_HEADER } from "../../src/core/constants";
import {
  CreateNodeRequest,
  CreateNodeResponse,
  PullTaskInsRequest,
  PullTaskInsResponse,
} from "../../src/proto/flwr/proto/fleet";
import { GetRunRequest, GetRunResponse } from "../../src/proto/flwr/proto/run";
import { readServerTlsFiles } from "../../src/transport/tls";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { memoryLogger, until, validTaskIns } from "./helpers";

const ORIGIN = "https://app.example.org";
const MAX_BODY = 64 * 1024;

let fx: Fixtures;
let link: SuperLinkHandle;
let ca: Buffer;

beforeAll(async () => {
  fx = generateFixtures(1);
  ca = fx.read(fx.caCert);
  link = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
      auth: {
        allowlist: Allowlist.fromCsvFile(fx.allowlistCsv),
        superlinkKeys: loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey),
        watchAllowlist: false,
      },
      fleetApiType: "rest",
      rest: { corsOrigins: [ORIGIN], maxBodyBytes: MAX_BODY },
      longPollMs: 60_000,
    },
    { logger: memoryLogger("warn").logger },
  );
});
afterAll(async () => {
  await link?.close(0);
  fx?.cleanup();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

const PROTOBUF = { "content-type": "application/protobuf", accept: "application/protobuf" };

/** One request; `body` undefined sends none, `declaredLength` claims a length without sending it. */
function request(
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: Uint8Array; declaredLength?: number } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.declaredLength !== undefined) headers["content-length"] = String(options.declaredLength);
    else if (options.body !== undefined) headers["content-length"] = String(options.body.byteLength);
    const req = https.request(
      { host: "127.0.0.1", port: link.fleetPort, path, method: options.method ?? "POST", ca, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", (err: NodeJS.ErrnoException) => {
      // The server drops a refused upload once it answered; the answer already resolved.
      if (err.code !== "ECONNRESET" && err.code !== "EPIPE") reject(err);
    });
    if (options.declaredLength !== undefined) {
      req.flushHeaders(); // headers only: the body never comes
    } else {
      req.end(options.body === undefined ? undefined : Buffer.from(options.body));
    }
  });
}

async function registeredNode(): Promise<{ auth: SuperNodeAuth; nodeId: bigint }> {
  const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
  const signed = auth.signedHeaders("CreateNodeRequest", CreateNodeRequest.fromPartial({ pingInterval: 30 }));
  const answer = await request("/api/v0/fleet/create-node", {
    headers: { ...PROTOBUF, ...signed.headers },
    body: signed.bytes,
  });
  expect(answer.status).toBe(200);
  auth.acceptServerPublicKeyHeader(answer.headers["public-key"] as string);
  return { auth, nodeId: CreateNodeResponse.decode(answer.body).node!.nodeId };
}

test("an unauthenticated CreateNode is refused with 401 before its body is read", async () => {
  // 10 MB announced, none sent: a 401 can only come from the headers.
  const answer = await request("/api/v0/fleet/create-node", { headers: PROTOBUF, declaredLength: 10_000_000 });
  expect(answer.status).toBe(401);
  expect(answer.body.toString()).toBe("Access denied\n");
  const unknownKey =
    Buffer.from("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").toString("base64url") + "==";
  const stranger = await request("/api/v0/fleet/create-node", {
    headers: { ...PROTOBUF, "public-key": unknownKey },
    declaredLength: 10_000_000,
  });
  expect(stranger.status).toBe(401);
});

test("an allowlisted key without a valid auth-token is refused (401 without a token, 403 with a wrong one)", async () => {
  const { auth, nodeId } = await registeredNode();
  const pull = PullTaskInsRequest.fromPartial({ node: { nodeId, anonymous: false } });
  const noToken = await request("/api/v0/fleet/pull-task-ins", {
    headers: { ...PROTOBUF, "public-key": auth.publicKeyHeader },
    body: PullTaskInsRequest.encode(pull).finish(),
  });
  expect(noToken.status).toBe(401);
  // A token made for another request does not authenticate this one.
  const other = auth.signedHeaders(
    "PullTaskInsRequest",
    PullTaskInsRequest.fromPartial({ node: { nodeId: nodeId + 1n, anonymous: false } }),
  );
  const wrong = await request("/api/v0/fleet/pull-task-ins", {
    headers: { ...PROTOBUF, ...other.headers },
    body: PullTaskInsRequest.encode(pull).finish(),
  });
  expect(wrong.status).toBe(403);
  // Signed correctly, but for another node than the key's.
  const foreign = await request("/api/v0/fleet/pull-task-ins", {
    headers: { ...PROTOBUF, ...other.headers },
    body: other.bytes,
  });
  expect(foreign.status).toBe(403);
  const good = auth.signedHeaders("PullTaskInsRequest", pull);
  const ok = await request("/api/v0/fleet/pull-task-ins", {
    headers: { ...PROTOBUF, ...good.headers },
    body: good.bytes,
  });
  expect(ok.status).toBe(200);
  expect(ok.headers["content-type"]).toBe("application/protobuf");
  expect(PullTaskInsResponse.decode(ok.body).taskInsList).toEqual([]);
});

test("an opted-in PullTaskIns is held open (long poll); one without the header is answered at once", async () => {
  const { auth, nodeId } = await registeredNode();
  const signed = auth.signedHeaders(
    "PullTaskInsRequest",
    PullTaskInsRequest.fromPartial({ node: { nodeId, anonymous: false } }),
  );
  const started = performance.now();
  const immediate = await request("/api/v0/fleet/pull-task-ins", {
    headers: { ...PROTOBUF, ...signed.headers },
    body: signed.bytes,
  });
  expect(immediate.status).toBe(200);
  expect(performance.now() - started).toBeLessThan(10_000);
  const held = request("/api/v0/fleet/pull-task-ins", {
    headers: { ...PROTOBUF, ...signed.headers, [LONG_POLL_HEADER]: "60000" },
    body: signed.bytes,
  });
  await until(() => link.waitingPulls === 1, "the REST pull to wait");
  // A new TaskIns for the node ends the wait with it.
  const runId = await link.state.createRun("", "", new Map());
  const taskId = await link.state.storeTaskIns(validTaskIns(runId, nodeId));
  const answer = await held;
  expect(answer.status).toBe(200);
  expect(PullTaskInsResponse.decode(answer.body).taskInsList.map((t) => t.taskId)).toEqual([taskId]);
  expect(link.waitingPulls).toBe(0);
});

test("CORS: a preflight from an allowed origin is answered 204 with the allowed headers; others get 403", async () => {
  const preflight = await request("/api/v0/fleet/pull-task-ins", {
    method: "OPTIONS",
    headers: {
      origin: ORIGIN,
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type,accept,public-key,auth-token",
    },
  });
  expect(preflight.status).toBe(204);
  expect(preflight.headers["access-control-allow-origin"]).toBe(ORIGIN);
  expect(preflight.headers["access-control-allow-methods"]).toBe("POST");
  expect(String(preflight.headers["access-control-allow-headers"]).split(", ")).toEqual(
    expect.arrayContaining(["content-type", "accept", "public-key", "auth-token", LONG_POLL_HEADER]),
  );
  const stranger = await request("/api/v0/fleet/pull-task-ins", {
    method: "OPTIONS",
    headers: { origin: "https://evil.example.org", "access-control-request-method": "POST" },
  });
  expect(stranger.status).toBe(403);
  expect(stranger.headers["access-control-allow-origin"]).toBeUndefined();
  // The actual call from the allowed origin carries the CORS answer and exposes the key header.
  const { auth } = await registeredNode();
  const signed = auth.signedHeaders("CreateNodeRequest", CreateNodeRequest.fromPartial({ pingInterval: 30 }));
  const call = await request("/api/v0/fleet/create-node", {
    headers: { ...PROTOBUF, ...signed.headers, origin: ORIGIN },
    body: signed.bytes,
  });
  expect(call.status).toBe(200);
  expect(call.headers["access-control-allow-origin"]).toBe(ORIGIN);
  expect(call.headers["access-control-expose-headers"]).toBe("public-key");
  expect(call.headers["public-key"]).toBeDefined();
});

test("bodies over the cap get 413, whether announced or streamed", async () => {
  const { auth } = await registeredNode();
  const announced = await request("/api/v0/fleet/push-task-res", {
    headers: { ...PROTOBUF, "public-key": auth.publicKeyHeader, "auth-token": "AAAA" },
    declaredLength: MAX_BODY + 1,
  });
  expect(announced.status).toBe(413);
  // Chunked upload (no Content-Length): cut off once it passes the cap.
  const streamed = await new Promise<number>((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: link.fleetPort,
        path: "/api/v0/fleet/push-task-res",
        method: "POST",
        ca,
        agent: false,
        headers: {
          ...PROTOBUF,
          "public-key": auth.publicKeyHeader,
          "auth-token": "AAAA",
          "transfer-encoding": "chunked",
        },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on("error", (err: NodeJS.ErrnoException) =>
      err.code === "ECONNRESET" || err.code === "EPIPE" ? undefined : reject(err),
    );
    const chunk = Buffer.alloc(16 * 1024);
    let sent = 0;
    const pump = (): void => {
      while (sent < MAX_BODY * 4) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once("drain", pump);
      }
      req.end();
    };
    pump();
  });
  expect(streamed).toBe(413);
});

test("malformed protobuf is 400 with a short message; Flower's header rules apply; unknown routes 404", async () => {
  const { auth, nodeId } = await registeredNode();
  const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
  const token = auth.signedHeaders("GetRunRequest", GetRunRequest.fromPartial({ runId: 1n })).headers;
  const malformed = await request("/api/v0/fleet/get-run", { headers: { ...PROTOBUF, ...token }, body: garbage });
  expect(malformed.status).toBe(400);
  expect(malformed.body.toString()).toMatch(/^Malformed GetRunRequest: .{1,200}\n$/);
  const json = await request("/api/v0/fleet/get-run", {
    headers: { ...PROTOBUF, ...token, "content-type": "application/json" },
    body: garbage,
  });
  expect(json.status).toBe(400);
  expect(json.body.toString()).toBe("Unsupported `Content-Type`\n");
  const noAccept = await request("/api/v0/fleet/get-run", {
    headers: { "content-type": "application/protobuf", ...token },
    body: garbage,
  });
  expect(noAccept.body.toString()).toBe("Missing header `Accept`\n");
  expect((await request("/api/v0/fleet/nope", { headers: PROTOBUF, body: garbage })).status).toBe(404);
  expect((await request("/api/v0/fleet/ping", { method: "GET" })).status).toBe(405);
  // Flower's REST client asks for GetRun at "//api/v0/fleet/get-run": served all the same.
  const runId = await link.state.createRun("", "", new Map());
  await link.state.acknowledgePing(nodeId, 30);
  const signed = auth.signedHeaders("GetRunRequest", GetRunRequest.fromPartial({ runId }));
  const run = await request("//api/v0/fleet/get-run", {
    headers: { ...PROTOBUF, ...signed.headers },
    body: signed.bytes,
  });
  expect(run.status).toBe(200);
  expect(GetRunResponse.decode(run.body).run?.runId).toBe(runId);
});

test("REST calls are counted in the SuperLink's metrics under their gRPC method names", async () => {
  expect(link.metrics.rpcCount("Fleet", "CreateNode", "UNAUTHENTICATED")).toBeGreaterThanOrEqual(2);
  expect(link.metrics.rpcCount("Fleet", "CreateNode", "OK")).toBeGreaterThanOrEqual(4);
  expect(link.metrics.rpcCount("Fleet", "PullTaskIns", "OK")).toBeGreaterThanOrEqual(3);
  expect(link.metrics.rpcCount("Fleet", "GetRun", "INVALID_ARGUMENT")).toBeGreaterThanOrEqual(1);
  // Under authentication CreateNode carries no MAC, so it makes no node online; a node's first
  // MAC-checked call after it (here the pulls) does, as a Ping would. No test here pings over REST.
  expect(link.metrics.onlineNodes()).toBeGreaterThanOrEqual(1);
});
