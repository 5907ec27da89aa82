import { Writable } from "node:stream";
import {
  ClientApp,
  NumPyClient,
  createReply,
  exceptionReason,
  type Client,
  type Context,
  type Message,
  type NDArrays,
} from "../../src/client";
import type { Config, Metrics } from "../../src/core/records/legacy-types";
import {
  evaluateInsToRecordSet,
  fitInsToRecordSet,
  getParametersInsToRecordSet,
  getPropertiesInsToRecordSet,
  recordSetToGetParametersRes,
} from "../../src/core/records/compat";
import { ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import { RecordSet } from "../../src/core/records/types";
import { InvalidConfigError } from "../../src/core/errors";
import { createLogger } from "../../src/core/logger";

const NODE_ID = -5555555555555555555n;

function incoming(messageType: string, content: RecordSet | undefined = new RecordSet()): Message {
  return {
    metadata: {
      runId: 1234567890123456789n,
      messageId: "4f1c2b4e-9c7e-4a59-9a8e-2b1d0c3e4f5a",
      srcNodeId: 0n,
      dstNodeId: NODE_ID,
      replyToMessage: "",
      groupId: "2",
      ttl: 3600,
      messageType,
      createdAt: Date.now() / 1000 - 1,
    },
    ...(content !== undefined ? { content } : {}),
  };
}

function newContext(nodeConfig: Context["nodeConfig"] = {}): Context {
  return { nodeId: NODE_ID, nodeConfig, state: new RecordSet(), runConfig: {} };
}

const weights = (): NDArrays => [
  { dtype: "float32", shape: [2], data: new Float32Array([1.5, -2]) },
  { dtype: "int64", shape: [1], data: new BigInt64Array([7n]) },
];

/** A NumPyClient implementing all four methods, recording what it received. */
class FullClient extends NumPyClient {
  seen: Array<{ method: string; parameters?: NDArrays; config: Config }> = [];
  override getParameters(config: Config): NDArrays {
    this.seen.push({ method: "getParameters", config });
    return weights();
  }
  override getProperties(config: Config): Record<string, string | number> {
    this.seen.push({ method: "getProperties", config });
    return { os: "linux", cores: 2 };
  }
  override async fit(parameters: NDArrays, config: Config): Promise<[NDArrays, number, Metrics]> {
    this.seen.push({ method: "fit", parameters, config });
    return [parameters, 10, { train_loss: 0.5 }];
  }
  override evaluate(parameters: NDArrays, config: Config): [number, number, Metrics] {
    this.seen.push({ method: "evaluate", parameters, config });
    return [0.25, 5, { accuracy: 0.75 }];
  }
}

class EmptyClient extends NumPyClient {}

function keysOf(rs: RecordSet | undefined): { p: string[]; m: string[]; c: string[] } {
  if (rs === undefined) throw new Error("reply has no content");
  return {
    p: [...rs.parametersRecords.keys()],
    m: [...rs.metricsRecords.keys()],
    c: [...rs.configsRecords.keys()].sort(),
  };
}

function expectReplyMetadata(reply: Message, request: Message): void {
  expect(reply.metadata).toMatchObject({
    runId: request.metadata.runId,
    messageId: "",
    srcNodeId: NODE_ID,
    dstNodeId: 0n,
    replyToMessage: request.metadata.messageId,
    groupId: "2",
    messageType: request.metadata.messageType,
  });
  expect(reply.metadata.createdAt).toBeGreaterThan(request.metadata.createdAt);
  expect(reply.metadata.ttl).toBeLessThan(3600);
  expect(reply.metadata.ttl).toBeGreaterThan(3590);
}

describe("ClientApp with a legacy clientFn (NumPyClient)", () => {
  const fitParameters = ndarraysToParameters(weights());

  it("answers get_parameters with getparametersres.parameters and .status", async () => {
    const client = new FullClient();
    const app = new ClientApp({ clientFn: () => client });
    const request = incoming("get_parameters", getParametersInsToRecordSet({ config: { which: "all" } }));
    const reply = await app.handle(request, newContext());
    expectReplyMetadata(reply, request);
    expect(reply.error).toBeUndefined();
    expect(keysOf(reply.content)).toEqual({
      p: ["getparametersres.parameters"],
      m: [],
      c: ["getparametersres.status"],
    });
    expect(reply.content!.configsRecords.get("getparametersres.status")).toEqual({ code: 0n, message: "Success" });
    const arrays = parametersToNdarrays(recordSetToGetParametersRes(reply.content!).parameters);
    expect(arrays.map((a) => [a.dtype, a.shape, Array.from(a.data as ArrayLike<number | bigint>)])).toEqual([
      ["float32", [2], [1.5, -2]],
      ["int64", [1], [7n]],
    ]);
    expect(client.seen[0]).toEqual({ method: "getParameters", config: { which: "all" } });
  });

  it("answers get_properties with getpropertiesres.properties and .status", async () => {
    const app = new ClientApp({ clientFn: () => new FullClient() });
    const reply = await app.handle(
      incoming("get_properties", getPropertiesInsToRecordSet({ config: {} })),
      newContext(),
    );
    expect(keysOf(reply.content)).toEqual({
      p: [],
      m: [],
      c: ["getpropertiesres.properties", "getpropertiesres.status"],
    });
    expect(reply.content!.configsRecords.get("getpropertiesres.properties")).toEqual({ os: "linux", cores: 2 });
    expect(reply.content!.configsRecords.get("getpropertiesres.status")).toEqual({ code: 0n, message: "Success" });
  });

  it("answers train with fitres.parameters, .num_examples, .metrics and .status", async () => {
    const client = new FullClient();
    const app = new ClientApp({ clientFn: () => client });
    const request = incoming(
      "train",
      fitInsToRecordSet({ parameters: fitParameters, config: { lr: 0.1, epochs: 2n } }),
    );
    const reply = await app.handle(request, newContext());
    expectReplyMetadata(reply, request);
    expect(keysOf(reply.content)).toEqual({
      p: ["fitres.parameters"],
      m: ["fitres.num_examples"],
      c: ["fitres.metrics", "fitres.status"],
    });
    const rs = reply.content!;
    expect(rs.metricsRecords.get("fitres.num_examples")).toEqual({ num_examples: 10n });
    expect(rs.configsRecords.get("fitres.metrics")).toEqual({ train_loss: 0.5 });
    expect(rs.configsRecords.get("fitres.status")).toEqual({ code: 0n, message: "Success" });
    // The client got the decoded arrays and the config (a sint64 config value reads back as a number).
    expect(client.seen[0]!.config).toEqual({ lr: 0.1, epochs: 2 });
    expect(Array.from(client.seen[0]!.parameters![0]!.data as Float32Array)).toEqual([1.5, -2]);
    const record = rs.parametersRecords.get("fitres.parameters")!;
    expect([...record.keys()]).toEqual(["0", "1"]);
    expect(record.get("0")!.stype).toBe("numpy.ndarray");
  });

  it("answers evaluate with evaluateres.loss, .num_examples, .metrics and .status", async () => {
    const app = new ClientApp({ clientFn: () => new FullClient() });
    const request = incoming("evaluate", evaluateInsToRecordSet({ parameters: fitParameters, config: {} }));
    const reply = await app.handle(request, newContext());
    expect(keysOf(reply.content)).toEqual({
      p: [],
      m: ["evaluateres.loss", "evaluateres.num_examples"],
      c: ["evaluateres.metrics", "evaluateres.status"],
    });
    const rs = reply.content!;
    expect(rs.metricsRecords.get("evaluateres.loss")).toEqual({ loss: 0.25 });
    expect(rs.metricsRecords.get("evaluateres.num_examples")).toEqual({ num_examples: 5n });
    expect(rs.configsRecords.get("evaluateres.metrics")).toEqual({ accuracy: 0.75 });
    expect(rs.configsRecords.get("evaluateres.status")).toEqual({ code: 0n, message: "Success" });
  });

  it("answers every method a NumPyClient does not override with Flower's NOT_IMPLEMENTED status", async () => {
    const app = new ClientApp({ clientFn: () => new EmptyClient() });
    const ctx = newContext();
    const getParameters = await app.handle(
      incoming("get_parameters", getParametersInsToRecordSet({ config: {} })),
      ctx,
    );
    expect(getParameters.content!.configsRecords.get("getparametersres.status")).toEqual({
      code: 2n,
      message: "Client does not implement `get_parameters`",
    });
    // Empty parameters: Flower's "_empty" placeholder with no bytes.
    const empty = getParameters.content!.parametersRecords.get("getparametersres.parameters")!;
    expect([...empty.keys()]).toEqual(["_empty"]);
    expect(recordSetToGetParametersRes(getParameters.content!).parameters).toEqual({ tensors: [], tensorType: "" });

    const props = await app.handle(incoming("get_properties", getPropertiesInsToRecordSet({ config: {} })), ctx);
    expect(props.content!.configsRecords.get("getpropertiesres.status")).toEqual({
      code: 1n,
      message: "Client does not implement `get_properties`",
    });
    expect(props.content!.configsRecords.get("getpropertiesres.properties")).toEqual({});

    const fit = await app.handle(incoming("train", fitInsToRecordSet({ parameters: fitParameters, config: {} })), ctx);
    expect(fit.content!.configsRecords.get("fitres.status")).toEqual({
      code: 3n,
      message: "Client does not implement `fit`",
    });
    expect(fit.content!.metricsRecords.get("fitres.num_examples")).toEqual({ num_examples: 0n });

    const evaluate = await app.handle(
      incoming("evaluate", evaluateInsToRecordSet({ parameters: fitParameters, config: {} })),
      ctx,
    );
    expect(evaluate.content!.configsRecords.get("evaluateres.status")).toEqual({
      code: 4n,
      message: "Client does not implement `evaluate`",
    });
    expect(evaluate.content!.metricsRecords.get("evaluateres.loss")).toEqual({ loss: 0 });
  });

  it("accepts a plain Client object and answers its missing methods NOT_IMPLEMENTED", async () => {
    const client: Client = {
      fit: (ins) => ({
        status: { code: 0, message: "Success" },
        parameters: ins.parameters,
        numExamples: 3,
        metrics: {},
      }),
    };
    const app = new ClientApp({ clientFn: async () => client });
    const fit = await app.handle(
      incoming("train", fitInsToRecordSet({ parameters: fitParameters, config: {} })),
      newContext(),
    );
    expect(fit.content!.metricsRecords.get("fitres.num_examples")).toEqual({ num_examples: 3n });
    const params = await app.handle(
      incoming("get_parameters", getParametersInsToRecordSet({ config: {} })),
      newContext(),
    );
    expect(params.content!.configsRecords.get("getparametersres.status")).toMatchObject({ code: 2n });
  });

  it("passes the context and Flower's cid: partition-id when set, else the node id", async () => {
    const seen: Array<{ cid: string; context: Context }> = [];
    const app = new ClientApp({
      clientFn: (context, cid) => {
        seen.push({ cid, context });
        return new FullClient();
      },
    });
    const request = (): Message => incoming("get_properties", getPropertiesInsToRecordSet({ config: {} }));
    const withPartition = newContext({ "partition-id": 3n });
    await app.handle(request(), withPartition);
    await app.handle(request(), newContext());
    expect(seen[0]!.cid).toBe("3");
    expect(seen[0]!.context).toBe(withPartition);
    expect(seen[1]!.cid).toBe(NODE_ID.toString());
  });

  it("sets the context on the client before calling it", async () => {
    const client = new FullClient();
    const context = newContext();
    const app = new ClientApp({ clientFn: () => client });
    await app.handle(incoming("get_properties", getPropertiesInsToRecordSet({ config: {} })), context);
    expect(client.getContext()).toBe(context);
  });

  it("replies with error code 2 to a message type the legacy path does not know", async () => {
    const app = new ClientApp({ clientFn: () => new FullClient() });
    const request = incoming("query");
    const reply = await app.handle(request, newContext());
    expect(reply.content).toBeUndefined();
    expect(reply.error).toEqual({ code: 2, reason: "<class 'ValueError'>:<'Invalid message type: query'>" });
    expectReplyMetadata(reply, request);
  });

  it("turns an exception in user code into an error reply (code 2, Flower's reason format)", async () => {
    class BrokenClient extends NumPyClient {
      override fit(): [NDArrays, number, Metrics] {
        throw new RangeError("learning rate out of range");
      }
    }
    const logLines: string[] = [];
    const logger = createLogger(
      { level: "error" },
      new Writable({
        write(chunk: Buffer, _e, cb) {
          logLines.push(chunk.toString());
          cb();
        },
      }),
    );
    const app = new ClientApp({ clientFn: () => new BrokenClient() });
    const request = incoming("train", fitInsToRecordSet({ parameters: fitParameters, config: {} }));
    const reply = await app.handle(request, newContext(), { logger });
    expect(reply.content).toBeUndefined();
    expect(reply.error).toEqual({ code: 2, reason: "<class 'RangeError'>:<'learning rate out of range'>" });
    expectReplyMetadata(reply, request);
    expect(logLines.join("")).toContain("ClientApp raised an exception");
  });

  it("rejects a fit result of the wrong shape with Flower's TypeError", async () => {
    class WrongShape extends NumPyClient {
      override fit(parameters: NDArrays): [NDArrays, number, Metrics] {
        return [parameters, 1.5, {}];
      }
    }
    const app = new ClientApp({ clientFn: () => new WrongShape() });
    const reply = await app.handle(
      incoming("train", fitInsToRecordSet({ parameters: fitParameters, config: {} })),
      newContext(),
    );
    expect(reply.error?.code).toBe(2);
    expect(reply.error?.reason).toMatch(
      /^<class 'TypeError'>:<'NumPyClient\.fit did not return a tuple with 3 elements\./,
    );
  });

  it("turns a clientFn that throws into an error reply", async () => {
    const app = new ClientApp({
      clientFn: () => {
        throw new Error("no dataset");
      },
    });
    const reply = await app.handle(incoming("train", new RecordSet()), newContext());
    expect(reply.error).toEqual({ code: 2, reason: "<class 'Error'>:<'no dataset'>" });
  });

  it("rejects from call() where handle() replies", async () => {
    const app = new ClientApp({ clientFn: () => new FullClient() });
    await expect(app.call(incoming("query"), newContext())).rejects.toThrow("Invalid message type: query");
  });
});

describe("ClientApp with the Message API", () => {
  it("dispatches train, evaluate and query to their handlers, with a context whose state persists", async () => {
    const app = new ClientApp();
    const calls: string[] = [];
    app
      .train((message, context) => {
        calls.push("train");
        const counter = context.state.metricsRecords.get("counter") ?? { n: 0n };
        counter["n"] = (counter["n"] as bigint) + 1n;
        context.state.metricsRecords.set("counter", counter);
        const content = new RecordSet();
        content.metricsRecords.set("out", { n: counter["n"] });
        return createReply(message, content);
      })
      .evaluate(async (message) => {
        calls.push("evaluate");
        return createReply(message, new RecordSet());
      })
      .query((message) => {
        calls.push("query");
        return createReply(message, new RecordSet());
      });
    const context = newContext();
    const first = await app.handle(incoming("train"), context);
    const second = await app.handle(incoming("train"), context);
    await app.handle(incoming("evaluate"), context);
    await app.handle(incoming("query"), context);
    expect(calls).toEqual(["train", "train", "evaluate", "query"]);
    expect(first.content!.metricsRecords.get("out")).toEqual({ n: 1n });
    expect(second.content!.metricsRecords.get("out")).toEqual({ n: 2n });
  });

  it("replies with error code 2 when no handler is registered or the type is unknown", async () => {
    const app = new ClientApp().train((m) => createReply(m, new RecordSet()));
    expect((await app.handle(incoming("evaluate"), newContext())).error).toEqual({
      code: 2,
      reason: "<class 'ValueError'>:<'No `evaluate` function registered'>",
    });
    expect((await app.handle(incoming("get_parameters"), newContext())).error).toEqual({
      code: 2,
      reason: "<class 'ValueError'>:<'Unknown message_type: get_parameters'>",
    });
  });

  it("replies with error code 2 when a handler returns something that is not a Message", async () => {
    const app = new ClientApp().train(() => undefined as unknown as Message);
    const reply = await app.handle(incoming("train"), newContext());
    expect(reply.error?.code).toBe(2);
    expect(reply.error?.reason).toMatch(/^<class 'TypeError'>:<'The `train` handler must return a Message/);
  });

  it("forbids mixing a clientFn with Message-API handlers", () => {
    const app = new ClientApp({ clientFn: () => new FullClient() });
    expect(() => app.train((m) => m)).toThrow(InvalidConfigError);
    expect(() => app.query((m) => m)).toThrow("Use either `app.query(handler)` or `clientFn`");
  });
});

describe("ClientApp.isClientApp", () => {
  it("recognises instances, including ones from another copy of the package (brand, not class)", () => {
    expect(ClientApp.isClientApp(new ClientApp())).toBe(true);
    const fromOtherCopy = { [Symbol.for("flwr-ts.ClientApp")]: true, handle: async () => undefined };
    expect(ClientApp.isClientApp(fromOtherCopy)).toBe(true);
    expect(ClientApp.isClientApp({ handle: async () => undefined })).toBe(false);
    expect(ClientApp.isClientApp(new FullClient())).toBe(false);
    expect(ClientApp.isClientApp(null)).toBe(false);
    expect(ClientApp.isClientApp(() => new ClientApp())).toBe(false);
  });
});

describe("exceptionReason", () => {
  it("formats errors the way Flower formats Python exceptions", () => {
    class DatasetMissing extends Error {}
    expect(exceptionReason(new TypeError("x"))).toBe("<class 'TypeError'>:<'x'>");
    expect(exceptionReason(new DatasetMissing("no data"))).toBe("<class 'DatasetMissing'>:<'no data'>");
    expect(exceptionReason("plain string")).toBe("<class 'string'>:<'plain string'>");
  });
});
