/**
 * Legacy types <-> transport.proto (grpc-bidi), checked against Flower 1.10's serde.py rules
 * and through real protobuf encoding (encode -> bytes -> decode).
 */
import { StatusCode } from "../../src/core/constants";
import {
  clientMessageKind,
  clientMessageToDisconnectRes,
  clientMessageToEvaluateRes,
  clientMessageToFitRes,
  clientMessageToGetParametersRes,
  clientMessageToGetPropertiesRes,
  disconnectResToClientMessage,
  evaluateResToClientMessage,
  fitInsToServerMessage,
  fitResToClientMessage,
  getParametersResToClientMessage,
  getPropertiesResToClientMessage,
  reconnectInsToServerMessage,
  serverMessageKind,
  serverMessageToInstruction,
  statusToProto,
} from "../../src/core/records/legacy-serde";
import { ClientMessage, Code, Reason, ServerMessage } from "../../src/proto/flwr/proto/transport";

const overWire = {
  server: (m: ServerMessage): ServerMessage => ServerMessage.decode(ServerMessage.encode(m).finish()),
  client: (m: ClientMessage): ClientMessage => ClientMessage.decode(ClientMessage.encode(m).finish()),
};
const ok = { code: StatusCode.OK, message: "Success" };

describe("ServerMessage instructions", () => {
  it("FitIns round-trips tensors and a config of every scalar type; small sint64 read back as numbers", () => {
    const tensors = [Uint8Array.from([1, 2, 3]), new Uint8Array(0)];
    const config = { lr: 0.1, epochs: 3n, big: 2n ** 60n, flag: true, name: "x", blob: Uint8Array.from([9]) };
    const msg = overWire.server(
      fitInsToServerMessage({ parameters: { tensors, tensorType: "numpy.ndarray" }, config }),
    );
    expect(serverMessageKind(msg)).toBe("fitIns");
    const decoded = serverMessageToInstruction(msg);
    expect(decoded).toEqual({
      kind: "fitIns",
      ins: {
        parameters: { tensors: [Uint8Array.from([1, 2, 3]), new Uint8Array(0)], tensorType: "numpy.ndarray" },
        config: { lr: 0.1, epochs: 3, big: 2n ** 60n, flag: true, name: "x", blob: Uint8Array.from([9]) },
      },
    });
  });

  it("ReconnectIns without seconds is 0 on the wire (Flower's ReconnectIns(seconds=None))", () => {
    expect(serverMessageToInstruction(overWire.server(reconnectInsToServerMessage(undefined)))).toEqual({
      kind: "reconnectIns",
      seconds: 0,
    });
    expect(serverMessageToInstruction(overWire.server(reconnectInsToServerMessage(5)))).toEqual({
      kind: "reconnectIns",
      seconds: 5,
    });
  });

  it("an empty ServerMessage is refused (Flower: 'Unsupported instruction in ServerMessage')", () => {
    expect(() => serverMessageToInstruction(overWire.server({}))).toThrow(/Unsupported instruction/);
  });

  it("a keyed `__proto__` config entry stays an ordinary key", () => {
    const msg = overWire.server({ getPropertiesIns: { config: new Map([["__proto__", { string: "v" }]]) } });
    const decoded = serverMessageToInstruction(msg);
    expect(decoded.kind === "getPropertiesIns" && Object.keys(decoded.ins.config)).toEqual(["__proto__"]);
  });
});

describe("ClientMessage replies", () => {
  it("FitRes and EvaluateRes round-trip; loss is a 32-bit float on the wire", () => {
    const fit = clientMessageToFitRes(
      overWire.client(
        fitResToClientMessage({
          status: ok,
          parameters: { tensors: [Uint8Array.from([7])], tensorType: "t" },
          numExamples: 12,
          metrics: { acc: 0.5 },
        }),
      ),
    );
    expect(fit).toEqual({
      status: ok,
      parameters: { tensors: [Uint8Array.from([7])], tensorType: "t" },
      numExamples: 12,
      metrics: { acc: 0.5 },
    });
    const evaluate = clientMessageToEvaluateRes(
      overWire.client(evaluateResToClientMessage({ status: ok, loss: 0.1, numExamples: 5, metrics: {} })),
    );
    expect(evaluate.loss).toBe(Math.fround(0.1));
    expect(evaluate.numExamples).toBe(5);
  });

  it("a *_NOT_IMPLEMENTED result carries only its status (Flower's serde)", () => {
    const fit = overWire.client(
      fitResToClientMessage({
        status: { code: StatusCode.FIT_NOT_IMPLEMENTED, message: "no fit" },
        parameters: { tensors: [Uint8Array.from([1])], tensorType: "t" },
        numExamples: 3,
        metrics: { a: 1 },
      }),
    );
    expect(fit.fitRes).toEqual({
      status: { code: Code.FIT_NOT_IMPLEMENTED, message: "no fit" },
      parameters: undefined,
      numExamples: 0n,
      metrics: new Map(),
    });
    const params = overWire.client(
      getParametersResToClientMessage({
        status: { code: StatusCode.GET_PARAMETERS_NOT_IMPLEMENTED, message: "" },
        parameters: { tensors: [Uint8Array.from([1])], tensorType: "t" },
      }),
    );
    expect(clientMessageToGetParametersRes(params).parameters).toEqual({ tensors: [], tensorType: "" });
    const props = overWire.client(
      getPropertiesResToClientMessage({
        status: { code: StatusCode.GET_PROPERTIES_NOT_IMPLEMENTED, message: "" },
        properties: { a: 1 },
      }),
    );
    expect(clientMessageToGetPropertiesRes(props)).toEqual({
      status: { code: StatusCode.GET_PROPERTIES_NOT_IMPLEMENTED, message: "" },
      properties: {},
    });
  });

  it("status codes other than the four NOT_IMPLEMENTED ones go out as OK (Flower's status_to_proto)", () => {
    expect(statusToProto({ code: 17, message: "odd" })).toEqual({ code: Code.OK, message: "odd" });
    expect(statusToProto({ code: StatusCode.EVALUATE_NOT_IMPLEMENTED, message: "" }).code).toBe(
      Code.EVALUATE_NOT_IMPLEMENTED,
    );
  });

  it("DisconnectRes: RECONNECT reads back as RECONNECT, ACK as UNKNOWN (Flower's disconnect_res_from_proto)", () => {
    expect(clientMessageToDisconnectRes(overWire.client(disconnectResToClientMessage("RECONNECT")))).toEqual({
      reason: "RECONNECT",
    });
    expect(clientMessageToDisconnectRes(overWire.client({ disconnectRes: { reason: Reason.ACK } }))).toEqual({
      reason: "UNKNOWN",
    });
  });

  it("a reply of the wrong kind is a MalformedMessageError naming both kinds", () => {
    const evaluate = overWire.client(evaluateResToClientMessage({ status: ok, loss: 1, numExamples: 1, metrics: {} }));
    expect(clientMessageKind(evaluate)).toBe("evaluateRes");
    expect(() => clientMessageToFitRes(evaluate)).toThrow(
      expect.objectContaining({
        code: "FLWR_MALFORMED_MESSAGE",
        message: expect.stringMatching(/fitRes, got evaluateRes/),
      }),
    );
  });

  it("a non-integer num_examples is refused before it is sent", () => {
    expect(() =>
      fitResToClientMessage({ status: ok, parameters: { tensors: [], tensorType: "" }, numExamples: 1.5, metrics: {} }),
    ).toThrow(/integer/);
  });
});
