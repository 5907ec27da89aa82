/** Small builders shared by the ServerApp-side tests. */
import { Writable } from "node:stream";
import { type Logger, createLogger } from "../../src/core/logger";
import type { Parameters } from "../../src/core/records/legacy-types";
import { ndarraysToParameters, parametersToNdarrays } from "../../src/core/records/parameters";
import type { NDArray } from "../../src/core/records/types";

export function f32(data: number[]): NDArray {
  return { dtype: "float32", shape: [data.length], data: Float32Array.from(data) };
}

/** Parameters holding one float32 vector. */
export function vectorParameters(data: number[]): Parameters {
  return ndarraysToParameters([f32(data)]);
}

/** The single float32 vector held by `p`, as plain numbers. */
export function vectorOf(p: Parameters): number[] {
  return Array.from(parametersToNdarrays(p)[0]!.data as Float32Array);
}

/** A pino logger whose JSON lines are collected (parsed) in `lines`. */
export function memoryLogger(level = "debug"): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: createLogger({ level, base: { component: "test" } }, sink), lines };
}

export function messagesOf(lines: Array<Record<string, unknown>>): string[] {
  return lines.map((l) => String(l["msg"]));
}
