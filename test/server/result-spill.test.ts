/**
 * Large training results written to a spill file as they arrive (src/server/result-spill.ts):
 * the built-in strategies aggregate them, read back in chunks, to exactly the bytes the
 * whole-array aggregation gives on the same inputs; a spilled result still reads as the same
 * .npy bytes; and the Server loop spills, aggregates and releases the file.
 */
import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FitRes, Parameters } from "../../src/core/records/legacy-types";
import { ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import type { NDArray, NDArrays } from "../../src/core/records/types";
import { SimpleClientManager, driverNodeDiscovery } from "../../src/server/client-manager";
import type { ClientProxy } from "../../src/server/client-proxy";
import { ResultSpill, arraySourcesOf } from "../../src/server/result-spill";
import { Server } from "../../src/server/round-loop";
import {
  CHUNK_ELEMENTS,
  FedAvg,
  FedMedian,
  aggregate,
  aggregateInplace,
  aggregateMedian,
  type FitResult,
} from "../../src/server/strategy";
import { FakeDriver, legacyNode } from "./fake-driver";

/** Deterministic pseudo-random floats in [-1, 1) with varied exponents. */
function randomFloats(n: number, seed: number): number[] {
  let x = seed >>> 0 || 1;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (((x >>> 0) / 2 ** 32) * 2 - 1) * 10 ** ((i % 7) - 3);
  }
  return out;
}

/** One client's arrays: a float32 layer longer than two chunks, a small float32 one, a float64 and an int64 one. */
function clientArrays(seed: number): NDArrays {
  const big = CHUNK_ELEMENTS + 123;
  return [
    { dtype: "float32", shape: [big], data: Float32Array.from(randomFloats(big, seed)) },
    { dtype: "float32", shape: [3, 5], data: Float32Array.from(randomFloats(15, seed + 1)) },
    { dtype: "float64", shape: [7], data: Float64Array.from(randomFloats(7, seed + 2)) },
    { dtype: "int64", shape: [4], data: BigInt64Array.from([1n, -2n, BigInt(seed), 2n ** 40n]) },
  ];
}

const client = (cid: string): ClientProxy => ({ cid }) as ClientProxy;

function fitResult(cid: string, parameters: Parameters, numExamples: number): FitResult {
  const res: FitRes = { status: { code: 0, message: "Success" }, parameters, numExamples, metrics: {} };
  return [client(cid), res];
}

/** SHA-256 of each tensor: compared instead of the bytes, which jest would diff element by element. */
const bytesOf = (p: Parameters): string[] => p.tensors.map((t) => createHash("sha256").update(t).digest("hex"));

describe("spilled training results", () => {
  const clients = [11, 22, 33].map(clientArrays);
  const examples = [10, 31, 7];
  const weighted = clients.map((arrays, i): [NDArrays, number] => [arrays, examples[i]!]);
  let dir: string;
  let spill: ResultSpill;
  let spilledResults: FitResult[];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "flwr-spill-test-"));
    spill = new ResultSpill(dir);
    spilledResults = await Promise.all(
      clients.map(async (arrays, i) =>
        fitResult(String(i), await spill.keep(ndarraysToParameters(arrays)), examples[i]!),
      ),
    );
  });

  afterAll(async () => {
    await spill.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("leave no file behind in the spill directory", () => {
    expect(readdirSync(dir)).toEqual([]);
  });

  it("read back as the .npy bytes they arrived as", () => {
    spilledResults.forEach(([, res], i) => {
      expect(bytesOf(res.parameters)).toEqual(bytesOf(ndarraysToParameters(clients[i]!)));
    });
    const sources = arraySourcesOf(spilledResults[0]![1].parameters);
    expect(sources.map((s) => [s.dtype, s.shape, s.length])).toEqual(
      clients[0]!.map((a) => [a.dtype, a.shape, a.data.length]),
    );
  });

  it("FedAvg (in place and not) and FedMedian aggregate them to the bytes the whole-array math gives", () => {
    const cases: Array<[FedAvg, (r: Array<[NDArrays, number]>) => NDArrays]> = [
      [new FedAvg(), aggregateInplace],
      [new FedAvg({ inplace: false }), aggregate],
      [new FedMedian(), aggregateMedian],
    ];
    for (const [strategy, math] of cases) {
      const expected = bytesOf(ndarraysToParameters(math(weighted)));
      const [fromSpill] = strategy.aggregateFit(1, spilledResults, []);
      expect(bytesOf(fromSpill!)).toEqual(expected);
      // The same results in memory (not spilled) give the same bytes too.
      const inMemory = clients.map((arrays, i) => fitResult(String(i), ndarraysToParameters(arrays), examples[i]!));
      const [fromMemory] = strategy.aggregateFit(1, inMemory, []);
      expect(bytesOf(fromMemory!)).toEqual(expected);
    }
  });

  it("reads .npy bytes at unaligned offsets and in Fortran order", () => {
    const a: NDArray = {
      dtype: "float32",
      shape: [CHUNK_ELEMENTS + 5],
      data: Float32Array.from(randomFloats(CHUNK_ELEMENTS + 5, 5)),
    };
    const b: NDArray = {
      dtype: "float32",
      shape: [CHUNK_ELEMENTS + 5],
      data: Float32Array.from(randomFloats(CHUNK_ELEMENTS + 5, 6)),
    };
    const unaligned = (p: Parameters): Parameters => ({
      tensorType: p.tensorType,
      tensors: p.tensors.map((t) => {
        const buf = new Uint8Array(t.length + 1);
        buf.set(t, 1);
        return buf.subarray(1);
      }),
    });
    const expected = bytesOf(
      ndarraysToParameters(
        aggregateInplace([
          [[a], 1],
          [[b], 3],
        ]),
      ),
    );
    const [out] = new FedAvg().aggregateFit(
      1,
      [
        fitResult("a", unaligned(ndarraysToParameters([a])), 1),
        fitResult("b", unaligned(ndarraysToParameters([b])), 3),
      ],
      [],
    );
    expect(bytesOf(out!)).toEqual(expected);
  });

  it("cannot be read once the round's spill is closed", async () => {
    const own = new ResultSpill(dir);
    const kept = await own.keep(
      ndarraysToParameters([{ dtype: "float32", shape: [2], data: Float32Array.from([1, 2]) }]),
    );
    expect(parametersToNdarrays(kept)[0]!.data).toEqual(Float32Array.from([1, 2]));
    await own.close();
    expect(() => kept.tensors).toThrow(/after its round ended/);
  });
});

describe("the Server loop with spilling", () => {
  it("spills every result, aggregates them as in memory and closes the spill", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flwr-spill-loop-"));
    try {
      const arrays = [1, 2, 3].map(clientArrays);
      const examples = [5, 9, 2];
      const run = async (fitResultSpill: { minBytes: number; dir: string } | false): Promise<[string[], string[]]> => {
        const driver = new FakeDriver();
        arrays.forEach((a, i) => {
          driver.addNode(
            BigInt(i + 1),
            legacyNode({
              fit: () => ({
                status: { code: 0, message: "Success" },
                parameters: ndarraysToParameters(a),
                numExamples: examples[i]!,
                metrics: {},
              }),
            }),
          );
        });
        const clientManager = new SimpleClientManager({ discover: driverNodeDiscovery(driver) });
        const strategy = new FedAvg({
          initialParameters: ndarraysToParameters(arrays[0]!),
          minAvailableClients: 3,
          fractionEvaluate: 0,
        });
        const server = new Server({ clientManager, strategy, fitResultSpill });
        await server.fit(1, undefined);
        // Sampling is random; the sum follows the instruction (= push) order.
        const order = driver.sentOfType("train").map((m) => Number(m.metadata.dstNodeId) - 1);
        const expected = aggregateInplace(order.map((k): [NDArrays, number] => [arrays[k]!, examples[k]!]));
        return [bytesOf(server.parameters), bytesOf(ndarraysToParameters(expected))];
      };
      const keep = jest.spyOn(ResultSpill.prototype, "keep");
      const [spilled, expected] = await run({ minBytes: 0, dir });
      expect(keep).toHaveBeenCalledTimes(3);
      keep.mockRestore();
      expect(readdirSync(dir)).toEqual([]);
      expect(spilled).toEqual(expected);
      const [inMemory, expectedInMemory] = await run(false);
      expect(inMemory).toEqual(expectedInMemory);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
