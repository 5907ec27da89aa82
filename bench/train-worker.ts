/**
 * Bench worker for the `train` scenario: the example ClientApp's fit and evaluate (CifarClient
 * from src/example/example-client-app.ts: build the model, set the weights, train 400 images for
 * 1 epoch in batches of 16, read the weights back) on one TensorFlow.js backend, in this process.
 * One warm-up fit, then `--fits N` rounds in a row from the same initial weights and seeds (round
 * r shuffles with seed r, as the ServerApp's `server_round` does), each followed by an evaluation
 * of the 200 test images, so the backends' accuracies can be compared round by round.
 * Prints one `BENCH_RESULT {json}` line on stdout.
 *
 * Usage: node train-worker.js --backend cpu|wasm|tfjs-node --fits N
 */
import { CifarClient } from "../src/example/example-client-app";
import { loadDataset, useFastestBackend } from "../src/example/task";
import { keepCurrentBackend } from "../src/example/tensorflow";
import type { NDArrays } from "../src/core/records/types";
import { RESULT_PREFIX } from "./lib/apps";

export interface TrainRound {
  round: number;
  fitSeconds: number;
  /** CPU (user + system) of this process during the fit, seconds. */
  fitCpuSeconds: number;
  evaluateSeconds: number;
  trainLoss: number;
  trainAccuracy: number;
  testLoss: number;
  testAccuracy: number;
}

export interface TrainWorkerReport {
  backend: string;
  /** Set when the requested backend is not available here. */
  unavailable?: string;
  warmupFitSeconds?: number;
  rounds: TrainRound[];
}

function flag(args: string[], name: string): string {
  const i = args.indexOf(name);
  const value = i >= 0 ? args[i + 1] : undefined;
  if (value === undefined) throw new Error(`train-worker: missing ${name}`);
  return value;
}

async function selectBackend(wanted: string): Promise<string | undefined> {
  if (wanted === "wasm") {
    const { backend } = await useFastestBackend();
    return backend === "wasm" ? undefined : `the wasm backend did not start (on ${backend})`;
  }
  const { backend } = keepCurrentBackend();
  if (wanted === backend) return undefined;
  return wanted === "tfjs-node" ? "@tensorflow/tfjs-node is not installed or does not load" : `on ${backend}`;
}

async function main(args: string[]): Promise<TrainWorkerReport> {
  const backend = flag(args, "--backend");
  const fits = Number(flag(args, "--fits"));
  const unavailable = await selectBackend(backend);
  if (unavailable !== undefined) return { backend, unavailable, rounds: [] };

  // The demo's first SuperNode: partition 0 of 2, 400 training and 200 test images.
  const data = loadDataset({ numPartitions: 2, partitionId: 0 });
  const client = new CifarClient(data);
  const initial: NDArrays = client.getParameters();
  const fit = async (parameters: NDArrays, round: number) => {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const [weights, , metrics] = await client.fit(parameters, { server_round: round });
    const cpu = process.cpuUsage(cpu0);
    return { weights, metrics, seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
  };
  const warmup = await fit(initial, 0);

  const rounds: TrainRound[] = [];
  let parameters = initial;
  for (let round = 1; round <= fits; round++) {
    const r = await fit(parameters, round);
    parameters = r.weights;
    const t0 = performance.now();
    const [testLoss, , evalMetrics] = await client.evaluate(parameters);
    rounds.push({
      round,
      fitSeconds: r.seconds,
      fitCpuSeconds: r.cpuSeconds,
      evaluateSeconds: (performance.now() - t0) / 1000,
      trainLoss: Number(r.metrics["train_loss"]),
      trainAccuracy: Number(r.metrics["train_accuracy"]),
      testLoss,
      testAccuracy: Number(evalMetrics["accuracy"]),
    });
  }
  return { backend, warmupFitSeconds: warmup.seconds, rounds };
}

main(process.argv.slice(2)).then(
  (report) => {
    process.stdout.write(RESULT_PREFIX + JSON.stringify(report) + "\n");
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`train-worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
