/**
 * The SuperNode against a real SuperLink over real gRPC on 127.0.0.1 ephemeral ports, with real
 * TLS certificates and OpenSSH keys from scripts/generate.sh, and a test Driver in the role of
 * the ServerApp.
 */
import { loadKeyPairFiles } from "../../src/auth/keys";
import { createServer } from "node:net";
import { ClientApp, NumPyClient, createReply, type NDArrays } from "../../src/client";
import type { Config, Metrics } from "../../src/core/records/legacy-types";
import { fitInsToRecordSet, recordSetToFitRes } from "../../src/core/records/compat";
import { ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import { RecordSet, type Message } from "../../src/core/records/types";
import { AuthenticationError, ConnectionError, InvalidConfigError } from "../../src/core/errors";
import type { SuperLinkHandle } from "../../src/superlink/superlink";
import { type SuperNodeConfig, type SuperNodeHandle, startSuperNode } from "../../src/supernode/supernode";
import { replyProblem } from "../../src/supernode/reply-check";
import { generateFixtures, type Fixtures } from "../helpers/fixtures";
import { TestDriver, memoryLogger, startTestSuperLink, until } from "./helpers";

class TrainingClient extends NumPyClient {
  override fit(parameters: NDArrays, config: Config): [NDArrays, number, Metrics] {
    const scale = Number(config["scale"] ?? 1);
    const out = parameters.map((a) => ({ ...a, data: (a.data as Float32Array).map((v) => v * scale) }));
    return [out, 50, { train_loss: 1.25 }];
  }
}

const trainingApp = (): ClientApp => new ClientApp({ clientFn: () => new TrainingClient() });

function fitContent(values: number[], scale = 2): RecordSet {
  return fitInsToRecordSet({
    parameters: ndarraysToParameters([{ dtype: "float32", shape: [values.length], data: new Float32Array(values) }]),
    config: { scale },
  });
}

let fixtures: Fixtures;
let otherFixtures: Fixtures;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  fixtures = generateFixtures(2);
  // A second CA and key set: a CA that did not sign the SuperLink's certificate, a key not in the allowlist.
  otherFixtures = generateFixtures(1);
});

afterAll(async () => {
  fixtures?.cleanup();
  otherFixtures?.cleanup();
});

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function superLink(options: Parameters<typeof startTestSuperLink>[0]): Promise<SuperLinkHandle> {
  const link = await startTestSuperLink({ fixtures, ...options });
  cleanups.push(() => link.close(0));
  return link;
}

async function superNode(
  config: Partial<SuperNodeConfig> & Pick<SuperNodeConfig, "superlink">,
  logger = memoryLogger("debug"),
): Promise<{ node: SuperNodeHandle; lines: typeof logger.lines }> {
  const node = await startSuperNode({ app: trainingApp(), maxBackoffMs: 300, ...config }, { logger: logger.logger });
  cleanups.push(() => node.close(2_000));
  return { node, lines: logger.lines };
}

function driver(link: SuperLinkHandle, tls: boolean): TestDriver {
  const d = new TestDriver(link.driverAddress, tls ? fixtures.read(fixtures.caCert) : undefined);
  cleanups.push(() => d.close());
  return d;
}

const tlsAuth = (): Partial<SuperNodeConfig> => ({
  rootCertificates: fixtures.read(fixtures.caCert),
  auth: loadKeyPairFiles(fixtures.clientPrivateKeys[0]!, fixtures.clientPublicKeys[0]!),
});

describe("SuperNode with TLS and node authentication", () => {
  it("is online after registering without a Ping: its first MAC-checked pull brings it online", async () => {
    const link = await superLink({ tls: true, auth: true });
    const { node } = await superNode({ superlink: link.fleetAddress, ...tlsAuth() });
    const d = driver(link, true);
    const runId = await d.createRun();
    await d.waitForNode(runId, node.nodeId);
    // The first Ping is due 17.5-22.5 s after registering (interval 30 s).
    expect(link.metrics.rpcCount("Fleet", "Ping", "OK")).toBe(0);
    expect(
      link.metrics.rpcCount("Fleet", "PullTaskIns", "OK") + link.metrics.rpcCount("Fleet", "CreateNode", "OK"),
    ).toBeGreaterThan(0);
    expect(link.metrics.onlineNodes()).toBe(1);
  });

  it("runs a task pushed by the Driver and the reply arrives with correct ancestry, ttl and producer", async () => {
    const link = await superLink({ tls: true, auth: true });
    const { node, lines } = await superNode({ superlink: link.fleetAddress, ...tlsAuth() });
    expect(lines.find((l) => l.event === "supernode.ready")).toMatchObject({ nodeId: node.nodeId.toString() });

    const d = driver(link, true);
    const runId = await d.createRun();
    await d.waitForNode(runId, node.nodeId);
    const { taskId, createdAt } = await d.push(runId, node.nodeId, "train", fitContent([1.5, -2]), "3");
    const { taskRes, message } = await d.reply(taskId);

    expect(taskRes.runId).toBe(runId);
    expect(taskRes.groupId).toBe("3");
    const task = taskRes.task!;
    expect(task.ancestry).toEqual([taskId]);
    expect(task.producer).toEqual({ nodeId: node.nodeId, anonymous: false });
    expect(task.consumer).toEqual({ nodeId: 0n, anonymous: true });
    expect(task.taskType).toBe("train");
    expect(task.createdAt).toBeGreaterThan(createdAt);
    expect(task.ttl).toBeGreaterThan(0);
    expect(task.ttl).toBeLessThan(3600);
    expect(task.ttl).toBeCloseTo(3600 - (task.createdAt - createdAt), 6);
    expect(task.error).toBeUndefined();

    const fitRes = recordSetToFitRes(message.content!);
    expect(fitRes.status).toEqual({ code: 0, message: "Success" });
    expect(fitRes.numExamples).toBe(50);
    expect(fitRes.metrics).toEqual({ train_loss: 1.25 });
    expect(Array.from(parametersToNdarrays(fitRes.parameters)[0]!.data as Float32Array)).toEqual([3, -4]);
  });

  it("does not run a TaskIns twice when the SuperLink delivers it again after the reply (at-least-once)", async () => {
    const link = await superLink({ tls: true, auth: true });
    // Deliver the first TaskIns once more on a later pull, as a lease expiry after a lost answer does.
    const getTaskIns = link.state.getTaskIns.bind(link.state);
    let first: Awaited<ReturnType<typeof getTaskIns>> | undefined;
    let replayed = false;
    let sent = false;
    link.state.getTaskIns = async (nodeId, limit) => {
      const got = await getTaskIns(nodeId, limit);
      if (got.length > 0 && first === undefined) first = got;
      else if (got.length === 0 && first !== undefined && !replayed && sent) {
        replayed = true;
        return first;
      }
      return got;
    };
    const { node, lines } = await superNode({ superlink: link.fleetAddress, ...tlsAuth() });
    const d = driver(link, true);
    const runId = await d.createRun();
    await d.waitForNode(runId, node.nodeId);
    const { taskId } = await d.push(runId, node.nodeId, "train", fitContent([1]), "1");
    await d.reply(taskId);
    sent = true;
    await until(() => lines.some((l) => l.event === "supernode.task-repeated"));
    expect(lines.find((l) => l.event === "supernode.task-repeated")).toMatchObject({ taskId });
    expect(lines.filter((l) => l.event === "supernode.reply-sent")).toHaveLength(1);
  });

  it("keeps one context per run across messages and passes the run's override config", async () => {
    const link = await superLink({ tls: true, auth: true });
    const contexts: unknown[] = [];
    const app = new ClientApp().query((message, context) => {
      contexts.push(context);
      const seen = (context.state.configsRecords.get("seen")?.["ids"] as string[] | undefined) ?? [];
      context.state.configsRecords.set("seen", { ids: [...seen, message.metadata.messageId] });
      const out = new RecordSet();
      out.configsRecords.set("out", { count: BigInt(seen.length + 1), lr: context.runConfig["lr"] ?? "none" });
      return createReply(message, out);
    });
    const { node } = await superNode({ superlink: link.fleetAddress, ...tlsAuth(), app });
    const d = driver(link, true);
    const runA = await d.createRun(new Map([["lr", { double: 0.5 }]]));
    const runB = await d.createRun();
    await d.waitForNode(runA, node.nodeId);

    const replies: Message[] = [];
    for (const runId of [runA, runA, runB]) {
      const { taskId } = await d.push(runId, node.nodeId, "query");
      replies.push((await d.reply(taskId)).message);
    }
    expect(replies.map((m) => m.content!.configsRecords.get("out"))).toEqual([
      { count: 1n, lr: 0.5 },
      { count: 2n, lr: 0.5 },
      { count: 1n, lr: "none" },
    ]);
    expect(contexts[0]).toBe(contexts[1]);
    expect(contexts[2]).not.toBe(contexts[0]);
  });

  it("answers an exception in the ClientApp with an error reply (code 2) and keeps serving", async () => {
    const link = await superLink({ tls: true, auth: true });
    let calls = 0;
    const app = new ClientApp().train((message) => {
      calls += 1;
      if (calls === 1) throw new RangeError("bad batch");
      return createReply(message, new RecordSet());
    });
    const { node } = await superNode({ superlink: link.fleetAddress, ...tlsAuth(), app });
    const d = driver(link, true);
    const runId = await d.createRun();
    const first = await d.push(runId, node.nodeId, "train");
    expect((await d.reply(first.taskId)).taskRes.task!.error).toEqual({
      code: 2n,
      reason: "<class 'RangeError'>:<'bad batch'>",
    });
    const second = await d.push(runId, node.nodeId, "train");
    const reply = await d.reply(second.taskId);
    expect(reply.taskRes.task!.error).toBeUndefined();
    expect(reply.taskRes.task!.recordset).toBeDefined();
  });

  it("answers a failing app factory with error code 1 (could not load the ClientApp)", async () => {
    const link = await superLink({ tls: true, auth: true });
    const { node } = await superNode({
      superlink: link.fleetAddress,
      ...tlsAuth(),
      app: () => {
        throw new Error("syntax error in client.js");
      },
    });
    const d = driver(link, true);
    const runId = await d.createRun();
    const { taskId } = await d.push(runId, node.nodeId, "train");
    expect((await d.reply(taskId)).taskRes.task!.error).toEqual({
      code: 1n,
      reason: "An exception was raised when attempting to load `ClientApp`",
    });
  });

  it("ignores a TaskIns without a recordset and keeps serving", async () => {
    const link = await superLink({ tls: true, auth: true });
    const { node, lines } = await superNode({ superlink: link.fleetAddress, ...tlsAuth() });
    const d = driver(link, true);
    const runId = await d.createRun();
    await d.push(runId, node.nodeId, "train", { code: 0, reason: "an error instead of content" });
    await until(() => lines.some((l) => l.event === "supernode.task-ignored"), "the ignored task to be logged");
    const { taskId } = await d.push(runId, node.nodeId, "train", fitContent([1]));
    expect((await d.reply(taskId)).taskRes.task!.recordset).toBeDefined();
  });

  it("refuses to start with a CA that did not sign the SuperLink's certificate, without retrying", async () => {
    const link = await superLink({ tls: true, auth: true });
    const { logger, lines } = memoryLogger();
    const err = await startSuperNode(
      {
        superlink: link.fleetAddress,
        app: trainingApp(),
        ...tlsAuth(),
        rootCertificates: otherFixtures.read(otherFixtures.caCert),
      },
      { logger },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidConfigError);
    expect((err as Error).message).toMatch(/TLS certificate verification of the SuperLink at 127\.0\.0\.1:\d+ failed/);
    expect((err as Error).message).toContain("--root-certificates");
    expect(lines.filter((l) => l.event === "supernode.retry")).toEqual([]);
  });

  it("refuses to start with TLS against a plaintext SuperLink, without retrying", async () => {
    const link = await superLink({});
    const err = await startSuperNode(
      { superlink: link.fleetAddress, app: trainingApp(), rootCertificates: fixtures.read(fixtures.caCert) },
      { logger: memoryLogger().logger },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidConfigError);
    expect((err as Error).message).toContain("does not speak TLS");
  });

  it("refuses to start with a key that is not in the allowlist: access denied", async () => {
    const link = await superLink({ tls: true, auth: true });
    const err = await startSuperNode(
      {
        superlink: link.fleetAddress,
        app: trainingApp(),
        rootCertificates: fixtures.read(fixtures.caCert),
        auth: loadKeyPairFiles(otherFixtures.clientPrivateKeys[0]!, otherFixtures.clientPublicKeys[0]!),
      },
      { logger: memoryLogger().logger },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as Error).message).toContain("access denied: is this node's public key in the SuperLink's allowlist?");
  });

  it("refuses to start with keys against a SuperLink that has authentication off", async () => {
    const link = await superLink({ tls: true });
    const err = await startSuperNode(
      { superlink: link.fleetAddress, app: trainingApp(), ...tlsAuth() },
      { logger: memoryLogger().logger },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidConfigError);
    expect((err as Error).message).toContain("did not send its public key");
  });

  it("refuses to start without keys against a SuperLink that requires them", async () => {
    const link = await superLink({ tls: true, auth: true });
    const err = await startSuperNode(
      { superlink: link.fleetAddress, app: trainingApp(), rootCertificates: fixtures.read(fixtures.caCert) },
      { logger: memoryLogger().logger },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as Error).message).toContain("requires node authentication");
  });

  it("unregisters with DeleteNode on close", async () => {
    const link = await superLink({ tls: true, auth: true });
    const { node, lines } = await superNode({ superlink: link.fleetAddress, ...tlsAuth() });
    const nodeId = node.nodeId;
    expect(await link.state.acknowledgePing(nodeId, 30)).toBe(true);
    await node.close(5_000);
    await expect(node.done).resolves.toBeUndefined();
    expect(await link.state.acknowledgePing(nodeId, 30)).toBe(false);
    expect(lines.some((l) => l.event === "supernode.node-deleted")).toBe(true);
  });
});

describe("SuperNode connection handling", () => {
  it.each([
    ["plaintext, no authentication", false],
    ["TLS with node authentication", true],
  ])("reconnects with backoff after a SuperLink restart and keeps serving (%s)", async (_name, secure) => {
    let link = await startTestSuperLink({ fixtures, tls: secure, auth: secure });
    const addresses = { fleetApiAddress: link.fleetAddress, driverApiAddress: link.driverAddress };
    cleanups.push(() => link.close(0));
    const { node, lines } = await superNode({
      superlink: link.fleetAddress,
      ...(secure ? tlsAuth() : { insecure: true }),
      pingIntervalSeconds: 6,
    });
    const firstId = node.nodeId;

    await link.close(0);
    await until(() => lines.some((l) => l.event === "supernode.retry"), "a failed call to be retried");
    link = await startTestSuperLink({ fixtures, tls: secure, auth: secure, ...addresses });

    // The new SuperLink has forgotten the node: the SuperNode registers again on its own.
    await until(() => lines.some((l) => l.event === "supernode.reregistered"), "the node to register again");
    expect(node.nodeId).not.toBe(firstId);
    // Without authentication the SuperLink answers the old node's pulls: only a Ping (due every
    // 2.4-3 s here, and at once after a reconnection) reveals the lost registration.
    if (!secure)
      expect(lines.find((l) => l.event === "supernode.node-unknown")).toMatchObject({
        reason: "Ping was answered with success=false",
      });

    const d = driver(link, secure);
    const runId = await d.createRun();
    await d.waitForNode(runId, node.nodeId);
    const { taskId } = await d.push(runId, node.nodeId, "train", fitContent([2]));
    const { taskRes, message } = await d.reply(taskId);
    expect(taskRes.task!.producer).toEqual({ nodeId: node.nodeId, anonymous: false });
    expect(recordSetToFitRes(message.content!).numExamples).toBe(50);
  });

  it("registers again when a ping says the SuperLink no longer knows the node (node deleted)", async () => {
    const link = await superLink({});
    const { node, lines } = await superNode({ superlink: link.fleetAddress, insecure: true, pingIntervalSeconds: 2 });
    const firstId = node.nodeId;
    await link.state.deleteNode(firstId);
    await until(() => lines.some((l) => l.event === "supernode.reregistered"), "the node to register again");
    expect(lines.find((l) => l.event === "supernode.node-unknown")).toMatchObject({
      nodeId: firstId.toString(),
      reason: "Ping was answered with success=false",
    });
    expect(node.nodeId).not.toBe(firstId);
    expect(await link.state.acknowledgePing(node.nodeId, 30)).toBe(true);
  });

  it("ends with a rejected `done` when the SuperLink stays away beyond the retry limits", async () => {
    const link = await startTestSuperLink({});
    const { node } = await superNode({ superlink: link.fleetAddress, insecure: true, maxRetries: 2, maxBackoffMs: 50 });
    await link.close(0);
    const err = await node.done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectionError);
    expect((err as Error).message).toMatch(/^Giving up on \w+ after 3 tries/);
  });

  it("serves a SuperLink that answers empty pulls at once (as Python's), pausing between pulls", async () => {
    const link = await superLink({ longPollMs: 0 });
    const { node } = await superNode({ superlink: link.fleetAddress, insecure: true, pollIntervalMs: 100 });
    const d = driver(link, false);
    const runId = await d.createRun();
    const { taskId } = await d.push(runId, node.nodeId, "train", fitContent([1]));
    expect((await d.reply(taskId)).taskRes.task!.recordset).toBeDefined();
  });

  it("gives up after --max-retries when the SuperLink is unreachable", async () => {
    const port = await closedPort();
    const err = await startSuperNode(
      { superlink: `127.0.0.1:${port}`, insecure: true, app: trainingApp(), maxRetries: 2, maxBackoffMs: 50 },
      { logger: memoryLogger().logger },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectionError);
    expect((err as Error).message).toMatch(/^Giving up on CreateNode after 3 tries/);
  });

  it("handles a reconnect message: replies RECONNECT, unregisters, and registers again after the delay", async () => {
    const link = await superLink({});
    const { node, lines } = await superNode({ superlink: link.fleetAddress, insecure: true });
    const firstId = node.nodeId;
    const d = driver(link, false);
    const runId = await d.createRun();
    const reconnect = new RecordSet();
    reconnect.configsRecords.set("config", { seconds: 1n });
    const { taskId } = await d.push(runId, firstId, "reconnect", reconnect);
    const { message } = await d.reply(taskId);
    expect(message.content!.configsRecords.get("config")).toEqual({ reason: 1n });

    await until(() => lines.some((l) => l.event === "supernode.reregistered"), "the node to register again");
    expect(await link.state.acknowledgePing(firstId, 30)).toBe(false);
    expect(node.nodeId).not.toBe(firstId);
    const next = await d.push(runId, node.nodeId, "train", fitContent([1]));
    expect((await d.reply(next.taskId)).taskRes.task!.recordset).toBeDefined();
  });

  it("stops cleanly on a reconnect message with 0 seconds", async () => {
    const link = await superLink({});
    const { node } = await superNode({ superlink: link.fleetAddress, insecure: true });
    const nodeId = node.nodeId;
    const d = driver(link, false);
    const runId = await d.createRun();
    const reconnect = new RecordSet();
    reconnect.configsRecords.set("config", { seconds: 0n });
    const { taskId } = await d.push(runId, nodeId, "reconnect", reconnect);
    await expect(node.done).resolves.toBeUndefined();
    expect((await d.reply(taskId)).message.content!.configsRecords.get("config")).toEqual({ reason: 1n });
    expect(await link.state.acknowledgePing(nodeId, 30)).toBe(false);
  });
});

describe("replyProblem", () => {
  const incoming = {
    runId: 1n,
    messageId: "m",
    srcNodeId: 0n,
    dstNodeId: 9n,
    replyToMessage: "",
    groupId: "g",
    ttl: 60,
    messageType: "train",
    createdAt: 1_720_000_000,
  };
  const reply = (overrides: Partial<Message["metadata"]> = {}): Message => ({
    metadata: {
      ...incoming,
      messageId: "",
      srcNodeId: 9n,
      dstNodeId: 0n,
      replyToMessage: "m",
      createdAt: 1_720_000_010,
      ttl: 50,
      ...overrides,
    },
    content: new RecordSet(),
  });

  it("accepts a reply built like createReply", async () => {
    expect(replyProblem(incoming, reply())).toBeUndefined();
  });

  it("names the metadata field that does not match", async () => {
    expect(replyProblem(incoming, reply({ replyToMessage: "other" }))).toMatchObject({
      kind: "invalid",
      fields: { field: "replyToMessage", actual: "other", expected: "m" },
    });
  });

  it("reports clock skew with both timestamps instead of dropping silently", async () => {
    const behind = replyProblem(incoming, reply({ createdAt: 1_719_999_999 }));
    expect(behind?.kind).toBe("clock");
    expect(behind?.text).toContain("1719999999");
    expect(behind?.text).toContain("1720000000");
    const expired = replyProblem(incoming, reply({ ttl: -5 }));
    expect(expired?.kind).toBe("clock");
    expect(expired?.text).toMatch(/TTL is -5 s/);
  });

  it("rejects a reply with both or neither of content and error", async () => {
    const both: Message = { ...reply(), error: { code: 0, reason: "" } };
    expect(replyProblem(incoming, both)?.kind).toBe("invalid");
  });
});

/** A port nothing listens on: bind an ephemeral one, then release it. */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
