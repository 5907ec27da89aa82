// usage: node tfbench.js cpu|wasm [threads]
const path = require("path");
const root = "/work/wt/perf/dist";
const which = process.argv[2];
async function main() {
  const tfmod = require(path.join(root, "core/tensorflow.js"));
  let tf;
  if (which === "wasm") {
    tf = tfmod.loadTensorFlow().tf;
    const wasm = require("@tensorflow/tfjs-backend-wasm");
    const dir = path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"));
    wasm.setWasmPaths(dir + "/");
    if (process.argv[3]) wasm.setThreadsCount(Number(process.argv[3]));
    await tf.setBackend("wasm");
    console.log("backend", tf.getBackend(), "simd", await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"), "threads", await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT"), wasm.getThreadsCount?.());
  } else {
    tf = tfmod.loadTensorFlow().tf;
    console.log("backend", tf.getBackend());
  }
  const task = require(path.join(root, "example/task.js"));
  const data = task.loadDataset({ numPartitions: 2, partitionId: 0 });
  const model = task.createModel(tf, 7);
  for (let r = 1; r <= 4; r++) {
    const t = performance.now();
    const res = await task.train(model, data.train, { ...task.DEFAULT_TRAIN_OPTIONS, shuffleSeed: r });
    const t2 = performance.now();
    const ev = await task.evaluate(model, data.test);
    console.log(`round ${r}: fit ${(t2 - t).toFixed(0)} ms, eval ${(performance.now() - t2).toFixed(0)} ms, train acc ${res.accuracy.toFixed(3)} loss ${res.loss.toFixed(3)}, test acc ${ev.accuracy.toFixed(3)}`);
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
