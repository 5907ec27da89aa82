/** ServerApp forms, the cross-copy brand, and constructor checks. */
import { InvalidConfigError } from "../../src/core/errors";
import { RecordSet, type Context } from "../../src/core/records/types";
import { FedAvg, ServerApp, type Driver } from "../../src/server";
import { FakeDriver } from "./fake-driver";
import { vectorParameters } from "./helpers";

const context = (): Context => ({ nodeId: 0n, nodeConfig: {}, state: new RecordSet(), runConfig: {} });

describe("ServerApp", () => {
  it("hands the Driver and Context to a main function and returns an empty History", async () => {
    const driver = new FakeDriver();
    driver.addNode(7n, async (msg) => {
      const reply = new RecordSet();
      reply.configsRecords.set("echo", { type: msg.metadata.messageType });
      return reply;
    });
    let seen: { driver: Driver; context: Context; replies: number } | undefined;
    const app = new ServerApp({
      main: async (d, c) => {
        const [nodeId] = await d.getNodeIds();
        const msg = d.createMessage(new RecordSet(), "query", nodeId!, "g1");
        const replies = await d.sendAndReceive([msg], { timeoutMs: 5_000 });
        expect(replies[0]!.content!.configsRecords.get("echo")).toEqual({ type: "query" });
        seen = { driver: d, context: c, replies: replies.length };
      },
    });
    const ctx = context();
    const history = await app.run(driver, ctx);
    expect(seen).toEqual({ driver, context: ctx, replies: 1 });
    expect(history.isEmpty).toBe(true);
    expect(driver.sent[0]!.metadata).toMatchObject({
      runId: driver.runId,
      srcNodeId: 0n,
      dstNodeId: 7n,
      groupId: "g1",
      ttl: 3600,
    });
  });

  it("builds the legacy components from the context with serverFn", async () => {
    const driver = new FakeDriver();
    let gotContext: Context | undefined;
    const app = new ServerApp({
      serverFn: (c) => {
        gotContext = c;
        return { config: { numRounds: 0 }, strategy: new FedAvg({ initialParameters: vectorParameters([1]) }) };
      },
    });
    const ctx = context();
    const history = await app.run(driver, ctx);
    expect(gotContext).toBe(ctx);
    expect(history.isEmpty).toBe(true);
  });

  it("is recognised by brand, also when made by another copy of the module", () => {
    expect(ServerApp.isServerApp(new ServerApp())).toBe(true);
    const foreign = { run: async () => undefined };
    Object.defineProperty(foreign, Symbol.for("flwr-ts.ServerApp"), { value: true });
    expect(ServerApp.isServerApp(foreign)).toBe(true);
    expect(ServerApp.isServerApp({ run: async () => undefined })).toBe(false);
    expect(ServerApp.isServerApp(null)).toBe(false);
  });

  it("refuses mixed or malformed forms", () => {
    const main = async (): Promise<void> => undefined;
    expect(() => new ServerApp({ main, strategy: new FedAvg() })).toThrow(InvalidConfigError);
    expect(() => new ServerApp({ main: 42 } as never)).toThrow(/main/);
    expect(() => new ServerApp({ config: { numRounds: -1 } })).toThrow(/numRounds/);
    expect(() => new ServerApp({ config: { roundTimeoutSeconds: 0 } })).toThrow(/roundTimeoutSeconds/);
  });

  it("checks outgoing messages as Flower's driver does", async () => {
    const driver = new FakeDriver();
    const msg = driver.createMessage(new RecordSet(), "train", 1n, "");
    await expect(driver.pushMessages([{ ...msg, metadata: { ...msg.metadata, ttl: 0 } }])).rejects.toThrow(
      /ttl must be > 0/,
    );
    await expect(driver.pushMessages([{ ...msg, metadata: { ...msg.metadata, runId: 1n } }])).rejects.toThrow(/run_id/);
    await expect(driver.pushMessages([{ ...msg, metadata: { ...msg.metadata, replyToMessage: "x" } }])).rejects.toThrow(
      /reply_to/,
    );
  });
});
