/** toServiceError: echoes truncated, internals replaced by an incident id the log can find. */
import * as grpc from "@grpc/grpc-js";
import { MalformedMessageError, NotFoundError, StateError } from "../../src/core/errors";
import { toServiceError } from "../../src/transport/status";

describe("toServiceError", () => {
  it("truncates a caller's echo in INVALID_ARGUMENT and NOT_FOUND", () => {
    const bad = toServiceError(new MalformedMessageError(`bad id ${"x".repeat(100_000)}`));
    expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bad.details!.length).toBeLessThan(300);
    expect(bad.details).toContain("truncated");
    expect(toServiceError(new NotFoundError("Node 5 not found"))).toEqual({
      code: grpc.status.NOT_FOUND,
      details: "Node 5 not found",
    });
  });

  it("answers state errors and unexpected exceptions with INTERNAL and an incident id only", () => {
    const reported: Array<[string, unknown]> = [];
    for (const err of [
      new StateError('SQLite state "/srv/secret/state.db": insert failed'),
      new TypeError("x is undefined at /app/x.js"),
    ]) {
      const status = toServiceError(err, (id, e) => reported.push([id, e]));
      expect(status.code).toBe(grpc.status.INTERNAL);
      expect(status.details).not.toMatch(/secret|state\.db|x\.js|undefined/);
      const id = /incident ([0-9a-f]{12})/.exec(status.details!)?.[1];
      expect(reported.at(-1)).toEqual([id, err]);
    }
    expect(new Set(reported.map(([id]) => id)).size).toBe(2);
  });
});

test("without a reporter, an internal failure says nothing at all (no id that no log holds)", () => {
  expect(toServiceError(new StateError("/srv/secret/state.db is locked"))).toEqual({
    code: grpc.status.INTERNAL,
    details: "Internal error",
  });
});
