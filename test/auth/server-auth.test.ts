/**
 * SuperNode authentication end to end: a grpc-js server on 127.0.0.1:0 with real TLS, the
 * authenticated Fleet service around a stub implementation that records what reaches it, and
 * real FleetClients using SuperNodeAuth.
 */
import * as grpc from "@grpc/grpc-js";
import { readFileSync, writeFileSync } from "node:fs";
import { Writable } from "node:stream";
import { Allowlist } from "../../src/auth/allowlist";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { base64UrlPadded, computeAuthToken, deriveHmacKey } from "../../src/auth/crypto";
import { loadKeyPairFiles, loadPrivateKeyFile, loadPublicKeyFile, sshFingerprint } from "../../src/auth/keys";
import {
  type AuthVerdict,
  FleetAuthenticator,
  type FleetAuthState,
  withFleetAuthentication,
} from "../../src/auth/server-auth";
import { createLogger } from "../../src/core/logger";
import { type FleetRequestName, type MapOrder, canonicalEncode } from "../../src/core/wire/canonical";
import {
  CreateNodeRequest,
  DeleteNodeRequest,
  FleetClient,
  type FleetServer,
  PingRequest,
  PullTaskInsRequest,
  PushTaskResRequest,
} from "../../src/proto/flwr/proto/fleet";
import { GetRunRequest } from "../../src/proto/flwr/proto/run";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { type KeyDir, makeKeyDir } from "./key-helpers";

/** A tiny FleetAuthState over Maps, with large negative ids to exercise bigint handling. */
class MapState implements FleetAuthState {
  readonly pingIntervals = new Map<bigint, number>();
  readonly keys = new Map<string, bigint>();
  readonly runs = new Set<bigint>();
  private nextId = -7_000_000_000_000_000_001n;

  async getNodeId(publicKey: Uint8Array): Promise<bigint | undefined> {
    return this.keys.get(Buffer.from(publicKey).toString("latin1"));
  }

  async createNode(pingInterval: number, publicKey: Uint8Array): Promise<bigint> {
    const key = Buffer.from(publicKey).toString("latin1");
    if (this.keys.has(key)) return 0n;
    const id = this.nextId;
    this.nextId -= 1_234_567_891n;
    this.pingIntervals.set(id, pingInterval);
    this.keys.set(key, id);
    return id;
  }

  async acknowledgePing(nodeId: bigint, pingInterval: number): Promise<boolean> {
    if (!this.pingIntervals.has(nodeId)) return false;
    this.pingIntervals.set(nodeId, pingInterval);
    return true;
  }

  async getNodes(runId: bigint): Promise<Set<bigint>> {
    return this.runs.has(runId) ? new Set(this.pingIntervals.keys()) : new Set();
  }
}

interface RecordedCall {
  method: string;
  request: unknown;
  /** The node the request speaks for (its node, or the producer of its TaskRes). */
  nodeId: bigint | undefined;
}

function requestNodeId(request: unknown): bigint | undefined {
  const r = request as { node?: { nodeId: bigint }; taskResList?: Array<{ task?: { producer?: { nodeId: bigint } } }> };
  return r.node?.nodeId ?? r.taskResList?.[0]?.task?.producer?.nodeId;
}

function stubFleet(calls: RecordedCall[]): FleetServer {
  const record = (method: string, call: { request: unknown }): void => {
    calls.push({ method, request: call.request, nodeId: requestNodeId(call.request) });
  };
  return {
    createNode: (call, cb) => {
      record("createNode", call);
      cb(null, { node: { nodeId: 1n, anonymous: false } });
    },
    deleteNode: (call, cb) => {
      record("deleteNode", call);
      cb(null, {});
    },
    ping: (call, cb) => {
      record("ping", call);
      cb(null, { success: true });
    },
    pullTaskIns: (call, cb) => {
      record("pullTaskIns", call);
      cb(null, { reconnect: undefined, taskInsList: [] });
    },
    pushTaskRes: (call, cb) => {
      record("pushTaskRes", call);
      cb(null, { reconnect: { reconnect: 5n }, results: new Map() });
    },
    getRun: (call, cb) => {
      record("getRun", call);
      cb(null, { run: { runId: call.request.runId, fabId: "", fabVersion: "", overrideConfig: new Map() } });
    },
  };
}

type Status = { code: grpc.status; details: string };

/** One unary call; resolves with the response and the initial metadata, rejects with the status. */
function unary<Req, Res>(
  client: grpc.Client,
  method: keyof FleetServer & string,
  request: Req,
  metadata: grpc.Metadata,
): Promise<{ response: Res; headers: grpc.Metadata | undefined }> {
  return new Promise((resolve, reject) => {
    let headers: grpc.Metadata | undefined;
    const fn = (client as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>)[method]!.bind(
      client,
    );
    const call: grpc.ClientUnaryCall = fn(request, metadata, (err: grpc.ServiceError | null, response: Res) => {
      if (err) reject(err);
      else resolve({ response, headers });
    });
    call.on("metadata", (md: grpc.Metadata) => {
      headers = md;
    });
  });
}

async function statusOf(promise: Promise<unknown>): Promise<Status> {
  try {
    await promise;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, details: e.details };
  }
  return { code: grpc.status.OK, details: "" };
}

const DENIED: Status = { code: grpc.status.UNAUTHENTICATED, details: "Access denied" };

let fx: Fixtures;
let keyDir: KeyDir;
let server: grpc.Server;
let client: FleetClient;
let rawClient: grpc.Client;
let state: MapState;
let allowlist: Allowlist;
let authenticator: FleetAuthenticator;
let serverPem: string;
let originalCsv: string;
const calls: RecordedCall[] = [];
const logLines: Record<string, unknown>[] = [];

beforeAll(async () => {
  fx = generateFixtures(2);
  keyDir = makeKeyDir();
  originalCsv = readFileSync(fx.allowlistCsv, "utf8");
  const serverKeys = loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey);
  serverPem = serverKeys.publicKeyPem;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean))
        logLines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const logger = createLogger({ level: "debug" }, sink);
  state = new MapState();
  allowlist = Allowlist.fromCsvFile(fx.allowlistCsv, { logger });
  authenticator = new FleetAuthenticator({
    allowlist,
    serverPrivateKey: serverKeys.privateKey,
    serverPublicKeyPem: serverKeys.publicKeyPem,
    state,
    logger,
  });
  const service = withFleetAuthentication(stubFleet(calls), authenticator);
  server = new grpc.Server();
  server.addService(service.definition, service.implementation);
  const credentials = grpc.ServerCredentials.createSsl(
    null,
    [{ cert_chain: readFileSync(fx.serverCert), private_key: readFileSync(fx.serverKey) }],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  const channelCredentials = grpc.credentials.createSsl(readFileSync(fx.caCert));
  // Verify the certificate as "localhost" (one of its SANs) without resolving that name.
  const options = { "grpc.ssl_target_name_override": "localhost" };
  client = new FleetClient(`127.0.0.1:${port}`, channelCredentials, options);
  rawClient = new grpc.Client(`127.0.0.1:${port}`, channelCredentials, options);
});

afterAll(async () => {
  client?.close();
  rawClient?.close();
  if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  authenticator?.close();
  allowlist?.close();
  fx?.cleanup();
  keyDir?.cleanup();
});

beforeEach(() => {
  calls.length = 0;
});

afterEach(() => {
  // Tests that edit the allowlist put it back.
  if (readFileSync(fx.allowlistCsv, "utf8") !== originalCsv) {
    writeFileSync(fx.allowlistCsv, originalCsv);
    allowlist.reload();
  }
});

/** CreateNode for client `index`; returns its auth (with the shared key) and node id. */
async function connect(
  index: number,
  pingInterval = 30,
): Promise<{ auth: SuperNodeAuth; nodeId: bigint; headers: grpc.Metadata | undefined }> {
  const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[index]!, fx.clientPublicKeys[index]!);
  const request = CreateNodeRequest.fromPartial({ pingInterval });
  const { response, headers } = await unary<CreateNodeRequest, { node?: { nodeId: bigint } }>(
    client,
    "createNode",
    request,
    auth.metadataFor("CreateNodeRequest", request),
  );
  auth.acceptCreateNodeMetadata(headers ?? new grpc.Metadata());
  return { auth, nodeId: response.node!.nodeId, headers };
}

function ping(
  auth: SuperNodeAuth,
  nodeId: bigint,
  metadata?: grpc.Metadata,
): Promise<{ response: { success: boolean } }> {
  const request = PingRequest.fromPartial({ node: { nodeId }, pingInterval: 30 });
  return unary(client, "ping", request, metadata ?? auth.metadataFor("PingRequest", request));
}

/** The shared HMAC key, derived independently of SuperNodeAuth (for hand-made tokens). */
function hmacKeyOf(auth: SuperNodeAuth): Buffer {
  const index = fx.clientPublicKeys.findIndex((p) => loadPublicKeyFile(p) === auth.publicKeyPem);
  return deriveHmacKey(loadPrivateKeyFile(fx.clientPrivateKeys[index]!), serverPem);
}

/** Sends exactly `bytes` as the request body (what our SuperNode does). */
function sendRaw(path: string, bytes: Uint8Array, metadata: grpc.Metadata): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    rawClient.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(bytes),
      metadata,
      (err, response) => (err ? reject(err) : resolve(response!)),
    );
  });
}

function pushRequest(producer: bigint, configs?: [string, number][]): PushTaskResRequest {
  return PushTaskResRequest.fromPartial({
    taskResList: [
      {
        taskId: "",
        groupId: "1",
        runId: 42n,
        task: {
          producer: { nodeId: producer },
          consumer: { anonymous: true },
          createdAt: 1720000000.5,
          ttl: 3600,
          ancestry: ["4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a"],
          taskType: "train",
          recordset: {
            configs: new Map(
              configs === undefined
                ? []
                : [["fitres.metrics", { data: new Map(configs.map(([k, n]) => [k, { double: n }])) }]],
            ),
          },
        },
      },
    ],
  });
}

describe("CreateNode", () => {
  test("an allowlisted key gets a node and the SuperLink's public key as initial metadata", async () => {
    const { nodeId, headers, auth } = await connect(0);
    expect(headers?.get("public-key")).toEqual([base64UrlPadded(Buffer.from(serverPem))]);
    expect(auth.serverPublicKeyPem).toBe(serverPem);
    expect(nodeId < 0n && nodeId < -(2n ** 53n)).toBe(true);
    expect(await state.getNodeId(Buffer.from(loadPublicKeyFile(fx.clientPublicKeys[0]!)))).toBe(nodeId);
    expect(calls).toEqual([]); // the inner CreateNode never runs
  });

  test("the same key always gets the same node id; CreateNode (no MAC) never grants liveness", async () => {
    const first = await connect(1, 30);
    // Created offline (interval 0): only an authenticated Ping brings it online.
    expect(state.pingIntervals.get(first.nodeId)).toBe(0);
    await state.acknowledgePing(first.nodeId, 30);
    const second = await connect(1, 45);
    expect(second.nodeId).toBe(first.nodeId);
    expect(state.pingIntervals.get(first.nodeId)).toBe(30); // neither extended nor cut short
    const other = await connect(0);
    expect(other.nodeId).not.toBe(first.nodeId);
  });

  test("an unknown key is denied and gets no SuperLink key", async () => {
    const outsiderKey = keyDir.sshKeygen("outsider", ["-t", "ecdsa", "-b", "384"]);
    const outsider = SuperNodeAuth.fromFiles(outsiderKey, `${outsiderKey}.pub`);
    const request = CreateNodeRequest.fromPartial({ pingInterval: 30 });
    let headers: grpc.Metadata | undefined;
    const status = await statusOf(
      unary(client, "createNode", request, outsider.metadataFor("CreateNodeRequest", request)).then((r) => {
        headers = r.headers;
      }),
    );
    expect(status).toEqual(DENIED);
    expect(headers).toBeUndefined();
    expect(await state.getNodeId(Buffer.from(outsider.publicKeyPem))).toBeUndefined();
  });

  test("a missing, empty or unpadded public-key header is denied", async () => {
    const request = CreateNodeRequest.fromPartial({ pingInterval: 30 });
    const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
    const unpadded = new grpc.Metadata();
    // Flower answers UNKNOWN "Exception calling application: Incorrect padding"; we deny.
    unpadded.set("public-key", auth.publicKeyHeader.replace(/=+$/, ""));
    const empty = new grpc.Metadata();
    empty.set("public-key", "");
    for (const md of [new grpc.Metadata(), empty, unpadded]) {
      expect(await statusOf(unary(client, "createNode", request, md))).toEqual(DENIED);
    }
  });

  test("the standard base64 alphabet is accepted in the header, as Python does", async () => {
    const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
    const md = new grpc.Metadata();
    md.set("public-key", Buffer.from(auth.publicKeyPem).toString("base64"));
    const request = CreateNodeRequest.fromPartial({ pingInterval: 30 });
    const { response } = await unary<CreateNodeRequest, { node?: { nodeId: bigint } }>(
      client,
      "createNode",
      request,
      md,
    );
    expect(response.node?.nodeId).toBe(await state.getNodeId(Buffer.from(auth.publicKeyPem)));
  });
});

describe("authenticated RPCs", () => {
  test("a Ping with a valid token reaches the handler with the verified node id", async () => {
    const { auth, nodeId } = await connect(0);
    expect((await ping(auth, nodeId)).response.success).toBe(true);
    expect(calls).toEqual([{ method: "ping", request: expect.anything(), nodeId }]);
  });

  test("exactly the canonical bytes sent raw are accepted (our SuperNode's way)", async () => {
    const { auth, nodeId } = await connect(0);
    const request = PullTaskInsRequest.fromPartial({ node: { nodeId } });
    const signed = auth.signedRequest("PullTaskInsRequest", request);
    await sendRaw("/flwr.proto.Fleet/PullTaskIns", signed.bytes, signed.metadata);
    expect(calls.map((c) => [c.method, c.nodeId])).toEqual([["pullTaskIns", nodeId]]);
  });

  test("a MAC over the raw bytes is accepted even with fields a re-encoding drops", async () => {
    const { auth, nodeId } = await connect(0);
    const request = PullTaskInsRequest.fromPartial({ node: { nodeId } });
    // Field 15 (varint 1) is unknown to PullTaskInsRequest: ts-proto drops it on decode, so the
    // canonical re-encoding differs from what was MAC'd and only the raw bytes match.
    const bytes = Buffer.concat([
      Buffer.from(canonicalEncode("PullTaskInsRequest", request)),
      Buffer.from([0x78, 0x01]),
    ]);
    const md = auth.metadataFor("PullTaskInsRequest", request);
    md.set("auth-token", base64UrlPadded(computeAuthToken(hmacKeyOf(auth), bytes)));
    await sendRaw("/flwr.proto.Fleet/PullTaskIns", bytes, md);
    expect(calls.map((c) => [c.method, c.nodeId])).toEqual([["pullTaskIns", nodeId]]);
  });

  test("a wrong, missing or replayed token is denied before the handler", async () => {
    const { auth, nodeId } = await connect(0);
    const request = PingRequest.fromPartial({ node: { nodeId }, pingInterval: 30 });
    const good = auth.metadataFor("PingRequest", request);
    const token = Buffer.from(String(good.get("auth-token")[0]).replace(/-/g, "+").replace(/_/g, "/"), "base64");

    const flipped = good.clone();
    token[5]! ^= 1;
    flipped.set("auth-token", base64UrlPadded(token));
    const missing = good.clone();
    missing.remove("auth-token");
    const short = good.clone();
    short.set("auth-token", base64UrlPadded(token.subarray(0, 16)));
    const garbage = good.clone();
    garbage.set("auth-token", "x");
    for (const md of [flipped, missing, short, garbage]) {
      expect(await statusOf(unary(client, "ping", request, md))).toEqual(DENIED);
    }
    // A token is bound to the request's content.
    const other = PingRequest.fromPartial({ node: { nodeId }, pingInterval: 31 });
    expect(await statusOf(unary(client, "ping", other, good))).toEqual(DENIED);
    expect(calls).toEqual([]);
  });

  test("a token made with another node's key is denied", async () => {
    const a = await connect(0);
    const b = await connect(1);
    const request = PingRequest.fromPartial({ node: { nodeId: a.nodeId }, pingInterval: 30 });
    const md = a.auth.metadataFor("PingRequest", request);
    md.set("auth-token", String(b.auth.metadataFor("PingRequest", request).get("auth-token")[0]));
    expect(await statusOf(unary(client, "ping", request, md))).toEqual(DENIED);
  });

  test("a request naming another node is denied (Ping, PullTaskIns, DeleteNode)", async () => {
    const a = await connect(0);
    const b = await connect(1);
    const pingB = PingRequest.fromPartial({ node: { nodeId: b.nodeId }, pingInterval: 30 });
    expect(await statusOf(unary(client, "ping", pingB, a.auth.metadataFor("PingRequest", pingB)))).toEqual(DENIED);
    const pullB = PullTaskInsRequest.fromPartial({ node: { nodeId: b.nodeId } });
    expect(
      await statusOf(unary(client, "pullTaskIns", pullB, a.auth.metadataFor("PullTaskInsRequest", pullB))),
    ).toEqual(DENIED);
    const deleteB = DeleteNodeRequest.fromPartial({ node: { nodeId: b.nodeId } });
    expect(
      await statusOf(unary(client, "deleteNode", deleteB, a.auth.metadataFor("DeleteNodeRequest", deleteB))),
    ).toEqual(DENIED);
    const noNode = PingRequest.fromPartial({ pingInterval: 30 });
    expect(await statusOf(unary(client, "ping", noNode, a.auth.metadataFor("PingRequest", noNode)))).toEqual(DENIED);
    expect(calls).toEqual([]);

    const deleteA = DeleteNodeRequest.fromPartial({ node: { nodeId: a.nodeId } });
    await unary(client, "deleteNode", deleteA, a.auth.metadataFor("DeleteNodeRequest", deleteA));
    expect(calls.map((c) => [c.method, c.nodeId])).toEqual([["deleteNode", a.nodeId]]);
  });

  test("PushTaskRes must be produced by the node itself and be non-empty", async () => {
    const a = await connect(0);
    const b = await connect(1);
    const foreign = pushRequest(b.nodeId);
    expect(
      await statusOf(unary(client, "pushTaskRes", foreign, a.auth.metadataFor("PushTaskResRequest", foreign))),
    ).toEqual(DENIED);
    const empty = PushTaskResRequest.fromPartial({ taskResList: [] });
    expect(
      await statusOf(unary(client, "pushTaskRes", empty, a.auth.metadataFor("PushTaskResRequest", empty))),
    ).toEqual(DENIED);
    expect(calls).toEqual([]);

    const own = pushRequest(a.nodeId, [["loss", 1.5]]);
    await unary(client, "pushTaskRes", own, a.auth.metadataFor("PushTaskResRequest", own));
    expect(calls.map((c) => [c.method, c.nodeId])).toEqual([["pushTaskRes", a.nodeId]]);
  });

  test("a MAC over either map order is accepted when map keys are prefix-related", async () => {
    const { auth, nodeId } = await connect(0);
    // Insertion order (what ts-proto puts on the wire) is neither upb nor lexicographic order,
    // so only the re-encodings can match: this exercises verifier paths (a) and (b).
    const request = pushRequest(nodeId, [
      ["loss_avg", 2],
      ["val", 3],
      ["loss", 1],
    ]);
    const wire = PushTaskResRequest.encode(request).finish();
    const orders: MapOrder[] = ["upb", "lexicographic"];
    const encodings = orders.map((order) => canonicalEncode("PushTaskResRequest", request, order));
    for (const encoded of encodings) expect(Buffer.from(encoded).equals(Buffer.from(wire))).toBe(false);
    expect(Buffer.from(encodings[0]!).equals(Buffer.from(encodings[1]!))).toBe(false);

    for (const order of orders) {
      await unary(client, "pushTaskRes", request, auth.metadataFor("PushTaskResRequest", request, order));
    }
    expect(calls.map((c) => c.method)).toEqual(["pushTaskRes", "pushTaskRes"]);

    // A MAC over some other byte string of the same request is not accepted.
    const md = auth.metadataFor("PushTaskResRequest", request);
    const hmacKeyless = computeAuthToken(Buffer.from("not the key"), wire);
    md.set("auth-token", base64UrlPadded(hmacKeyless));
    expect(await statusOf(unary(client, "pushTaskRes", request, md))).toEqual(DENIED);
  });

  test("GetRun needs an existing run in which the node is online", async () => {
    const { auth } = await connect(0);
    state.runs.add(77n);
    const known = GetRunRequest.fromPartial({ runId: 77n });
    const { response } = await unary<GetRunRequest, { run?: { runId: bigint } }>(
      client,
      "getRun",
      known,
      auth.metadataFor("GetRunRequest", known),
    );
    expect(response.run?.runId).toBe(77n);
    expect(calls.map((c) => c.method)).toEqual(["getRun"]); // GetRunRequest names no node

    const unknown = GetRunRequest.fromPartial({ runId: 78n });
    expect(await statusOf(unary(client, "getRun", unknown, auth.metadataFor("GetRunRequest", unknown)))).toEqual(
      DENIED,
    );
  });

  test("a valid token from a key with no node yet is denied", async () => {
    const fresh = keyDir.sshKeygen("fresh", ["-t", "ecdsa", "-b", "384"]);
    const auth = SuperNodeAuth.fromFiles(fresh, `${fresh}.pub`);
    writeFileSync(fx.allowlistCsv, `${originalCsv.trim()},${readFileSync(`${fresh}.pub`, "utf8").trim()}\n`);
    allowlist.reload();
    // The key is allowed but never called CreateNode: give it the server key out of band.
    const md = new grpc.Metadata();
    md.set("public-key", base64UrlPadded(Buffer.from(serverPem)));
    auth.acceptCreateNodeMetadata(md);
    expect(await statusOf(ping(auth, 5n))).toEqual(DENIED);
  });
});

describe("allowlist changes", () => {
  test("a key removed from the allowlist is denied on the next call; others keep working", async () => {
    const a = await connect(0);
    const b = await connect(1);
    expect((await ping(a.auth, a.nodeId)).response.success).toBe(true);
    expect((await ping(b.auth, b.nodeId)).response.success).toBe(true);
    const cachedBefore = authenticator.cachedKeys;

    const [keyA, keyB] = originalCsv.trim().split(",");
    expect(keyA && keyB).toBeTruthy();
    writeFileSync(fx.allowlistCsv, `${keyB}\n`);
    expect(allowlist.reload().removed).toEqual([a.auth.publicKeyPem]);
    expect(authenticator.cachedKeys).toBe(cachedBefore - 1);

    expect(await statusOf(ping(a.auth, a.nodeId))).toEqual(DENIED);
    const request = CreateNodeRequest.fromPartial({ pingInterval: 30 });
    expect(
      await statusOf(unary(client, "createNode", request, a.auth.metadataFor("CreateNodeRequest", request))),
    ).toEqual(DENIED);
    expect((await ping(b.auth, b.nodeId)).response.success).toBe(true);

    // Put back: the same key works again with the same node.
    writeFileSync(fx.allowlistCsv, originalCsv);
    allowlist.reload();
    expect((await ping(a.auth, a.nodeId)).response.success).toBe(true);
  });
});

test("rejections are logged with reason and fingerprint, never with key material", async () => {
  const { auth, nodeId } = await connect(0);
  logLines.length = 0;
  const request = PingRequest.fromPartial({ node: { nodeId: nodeId + 1n }, pingInterval: 30 });
  const md = auth.metadataFor("PingRequest", request);
  expect(await statusOf(unary(client, "ping", request, md))).toEqual(DENIED);
  const denied = logLines.filter((l) => l["event"] === "fleet.auth-denied");
  expect(denied).toHaveLength(1);
  expect(denied[0]).toMatchObject({
    level: 40,
    rpc: "Ping",
    nodeId: nodeId.toString(),
    key: sshFingerprint(auth.publicKeyPem),
    reason: `request names node ${nodeId + 1n}, not this node`,
  });
  const text = JSON.stringify(logLines);
  expect(text).not.toContain("BEGIN PUBLIC KEY");
  expect(text).not.toContain(auth.publicKeyHeader.slice(0, 40));
  expect(text).not.toContain(String(md.get("auth-token")[0]));
});

describe("FleetAuthenticator without gRPC", () => {
  const headersOf = (
    auth: SuperNodeAuth,
    name: FleetRequestName,
    request: object,
  ): { publicKey: string; authToken: string | undefined } => {
    const md = auth.metadataFor(name, request);
    const token = md.get("auth-token")[0];
    return { publicKey: auth.publicKeyHeader, authToken: token === undefined ? undefined : String(token) };
  };

  test("the HMAC key cache stays within its bound and stays correct", async () => {
    const keys = loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey);
    const localState = new MapState();
    const small = new FleetAuthenticator({
      allowlist,
      serverPrivateKey: keys.privateKey,
      serverPublicKeyPem: keys.publicKeyPem,
      state: localState,
      hmacKeyCacheSize: 1,
    });
    try {
      const nodes: Array<{ auth: SuperNodeAuth; nodeId: bigint }> = [];
      for (const i of [0, 1]) {
        const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[i]!, fx.clientPublicKeys[i]!);
        const nodeId = await small.registerNode(auth.publicKeyPem, 30);
        const md = new grpc.Metadata();
        md.set("public-key", small.serverPublicKeyHeader);
        auth.acceptCreateNodeMetadata(md);
        nodes.push({ auth, nodeId });
      }
      for (let round = 0; round < 3; round++) {
        for (const { auth, nodeId } of nodes) {
          const request = PingRequest.fromPartial({ node: { nodeId }, pingInterval: 30 });
          const verdict: AuthVerdict = await small.authenticate(
            "PingRequest",
            request,
            headersOf(auth, "PingRequest", request),
          );
          expect(verdict).toEqual({ ok: true, publicKeyPem: auth.publicKeyPem, nodeId });
          expect(small.cachedKeys).toBe(1);
        }
      }
    } finally {
      small.close();
    }
  });

  test("registerNode reuses the node of a key bound by a concurrent CreateNode", async () => {
    const keys = loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey);
    const inner = new MapState();
    let lookups = 0;
    // The first lookup misses (the other CreateNode has not finished), then createNode finds
    // the key taken and returns 0n.
    const racing: FleetAuthState = {
      getNodeId: async (pk) => (lookups++ === 0 ? undefined : inner.getNodeId(pk)),
      createNode: (pi, pk) => inner.createNode(pi, pk),
      acknowledgePing: (id, pi) => inner.acknowledgePing(id, pi),
      getNodes: (run) => inner.getNodes(run),
    };
    const pem = loadPublicKeyFile(fx.clientPublicKeys[0]!);
    const existing = await inner.createNode(30, Buffer.from(pem));
    const auth = new FleetAuthenticator({
      allowlist,
      serverPrivateKey: keys.privateKey,
      serverPublicKeyPem: keys.publicKeyPem,
      state: racing,
    });
    try {
      expect(await auth.registerNode(pem, 60)).toBe(existing);
      expect(inner.pingIntervals.get(existing)).toBe(30); // liveness untouched
    } finally {
      auth.close();
    }
  });

  test("the first MAC-checked call after CreateNode brings the node online for CreateNode's interval, once", async () => {
    const keys = loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey);
    const localState = new MapState();
    const online: Array<[bigint, number]> = [];
    const authenticator = new FleetAuthenticator({
      allowlist,
      serverPrivateKey: keys.privateKey,
      serverPublicKeyPem: keys.publicKeyPem,
      state: localState,
      onFirstCallOnline: (nodeId, seconds) => online.push([nodeId, seconds]),
    });
    try {
      const node = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
      const nodeId = await authenticator.registerNode(node.publicKeyPem, 45);
      expect(localState.pingIntervals.get(nodeId)).toBe(0); // CreateNode alone: offline
      const md = new grpc.Metadata();
      md.set("public-key", authenticator.serverPublicKeyHeader);
      node.acceptCreateNodeMetadata(md);

      // A pull with a wrong MAC proves nothing.
      const pull = PullTaskInsRequest.fromPartial({ node: { nodeId } });
      const forged = { ...headersOf(node, "PullTaskInsRequest", pull), authToken: base64UrlPadded(Buffer.alloc(32)) };
      expect((await authenticator.authenticate("PullTaskInsRequest", pull, forged)).ok).toBe(false);
      expect(localState.pingIntervals.get(nodeId)).toBe(0);
      expect(online).toEqual([]);

      expect(
        (await authenticator.authenticate("PullTaskInsRequest", pull, headersOf(node, "PullTaskInsRequest", pull))).ok,
      ).toBe(true);
      expect(localState.pingIntervals.get(nodeId)).toBe(45);
      expect(online).toEqual([[nodeId, 45]]);

      // Later calls leave liveness to the Pings.
      localState.pingIntervals.set(nodeId, 0);
      expect(
        (await authenticator.authenticate("PullTaskInsRequest", pull, headersOf(node, "PullTaskInsRequest", pull))).ok,
      ).toBe(true);
      expect(localState.pingIntervals.get(nodeId)).toBe(0);
      expect(online).toHaveLength(1);

      // CreateNode again (a restarted SuperNode): its first call counts again.
      expect(await authenticator.registerNode(node.publicKeyPem, 20)).toBe(nodeId);
      expect(
        (await authenticator.authenticate("PullTaskInsRequest", pull, headersOf(node, "PullTaskInsRequest", pull))).ok,
      ).toBe(true);
      expect(localState.pingIntervals.get(nodeId)).toBe(20);

      // A DeleteNode as the first call does not bring the node online.
      expect(await authenticator.registerNode(node.publicKeyPem, 20)).toBe(nodeId);
      localState.pingIntervals.set(nodeId, 0);
      const del = DeleteNodeRequest.fromPartial({ node: { nodeId } });
      expect(
        (await authenticator.authenticate("DeleteNodeRequest", del, headersOf(node, "DeleteNodeRequest", del))).ok,
      ).toBe(true);
      expect(localState.pingIntervals.get(nodeId)).toBe(0);
      expect(online).toHaveLength(2);
    } finally {
      authenticator.close();
    }
  });

  test("a server key pair that does not belong together is refused", () => {
    const keys = loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey);
    expect(
      () =>
        new FleetAuthenticator({
          allowlist,
          serverPrivateKey: keys.privateKey,
          serverPublicKeyPem: loadPublicKeyFile(fx.clientPublicKeys[0]!),
          state: new MapState(),
        }),
    ).toThrow(/must be one key pair/);
  });
});
