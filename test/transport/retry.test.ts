import * as grpc from "@grpc/grpc-js";
import { AuthenticationError, ConnectionError, InvalidConfigError, NotFoundError } from "../../src/core/errors";
import {
  RetryInvoker,
  type RetryDeps,
  type RetryPolicy,
  type RetryState,
  abortableSleep,
  backoffCeilingMs,
  classifyFleetError,
  isCertificateFailure,
} from "../../src/transport/retry";

function serviceError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), {
    code,
    details,
    metadata: new grpc.Metadata(),
  });
}

const unavailable = (): grpc.ServiceError =>
  serviceError(grpc.status.UNAVAILABLE, "No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1");

/** A fake clock advanced only by the fake sleep, so no test waits for real. */
function fakeTime(random: () => number): { deps: RetryDeps; waits: number[]; clock: { now: number } } {
  const waits: number[] = [];
  const clock = { now: 0 };
  return {
    waits,
    clock,
    deps: {
      random,
      now: () => clock.now,
      sleep: async (ms) => {
        waits.push(ms);
        clock.now += ms;
      },
    },
  };
}

/** A call failing `failures` times with `error()`, then returning "ok". */
function flaky(
  failures: number,
  error: () => unknown = unavailable,
): { fn: () => Promise<string>; calls: () => number } {
  let calls = 0;
  return {
    fn: async () => {
      calls += 1;
      if (calls <= failures) throw error();
      return "ok";
    },
    calls: () => calls,
  };
}

describe("backoffCeilingMs", () => {
  it("doubles from 1 s and is capped at 30 s by default", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffCeilingMs(n))).toEqual([
      1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
    ]);
    expect(backoffCeilingMs(200)).toBe(30000);
  });

  it("follows a custom base, multiplier and cap", () => {
    const policy: RetryPolicy = { baseDelayMs: 100, multiplier: 3, maxBackoffMs: 1000 };
    expect([1, 2, 3, 4].map((n) => backoffCeilingMs(n, policy))).toEqual([100, 300, 900, 1000]);
  });
});

describe("RetryInvoker", () => {
  it("waits a full-jitter fraction of the capped ceiling between tries", async () => {
    const { deps, waits } = fakeTime(() => 0.5);
    const call = flaky(7);
    await expect(new RetryInvoker({}, deps).invoke("PullTaskIns", call.fn)).resolves.toBe("ok");
    expect(call.calls()).toBe(8);
    expect(waits).toEqual([500, 1000, 2000, 4000, 8000, 15000, 15000]);
  });

  it("keeps every jittered wait within [0, ceiling]", async () => {
    const draws = [0, 0.999999, 0.25, 0.75, 0.1, 0.9, 0.5, 0.3, 0.6, 0.01];
    let i = 0;
    const { deps, waits } = fakeTime(() => draws[i++ % draws.length]!);
    const call = flaky(10);
    await new RetryInvoker({ maxBackoffMs: 5000 }, deps).invoke("Ping", call.fn);
    waits.forEach((w, index) => {
      const ceiling = backoffCeilingMs(index + 1, { maxBackoffMs: 5000 });
      expect(w).toBeGreaterThanOrEqual(0);
      expect(w).toBeLessThanOrEqual(ceiling);
    });
    expect(waits[0]).toBe(0);
    expect(waits[1]).toBeCloseTo(2000, 0);
    expect(Math.max(...waits)).toBeLessThanOrEqual(5000);
  });

  it("gives up after maxRetries + 1 tries with a ConnectionError carrying the last failure", async () => {
    const { deps } = fakeTime(() => 0.5);
    const gaveUp: RetryState[] = [];
    const call = flaky(100);
    const invoker = new RetryInvoker({ maxRetries: 2 }, { ...deps, onGiveUp: (s) => gaveUp.push(s) });
    const err = await invoker.invoke("CreateNode", call.fn).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectionError);
    expect((err as Error).message).toMatch(
      /^Giving up on CreateNode after 3 tries in .* s: UNAVAILABLE: No connection established/,
    );
    expect((err as ConnectionError).cause).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(call.calls()).toBe(3);
    expect(gaveUp).toHaveLength(1);
    expect(gaveUp[0]!.tries).toBe(3);
  });

  it("tries exactly once with maxRetries 0", async () => {
    const { deps, waits } = fakeTime(() => 0.5);
    const call = flaky(100);
    await expect(new RetryInvoker({ maxRetries: 0 }, deps).invoke("CreateNode", call.fn)).rejects.toThrow(
      ConnectionError,
    );
    expect(call.calls()).toBe(1);
    expect(waits).toEqual([]);
  });

  it("gives up once maxWaitTime has passed, never waiting beyond it", async () => {
    const { deps, waits, clock } = fakeTime(() => 0.999);
    const call = flaky(100);
    const err = await new RetryInvoker({ maxWaitTimeMs: 5000 }, deps)
      .invoke("PullTaskIns", call.fn)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectionError);
    // 999 + 1998 + then capped at the 2003 ms left: the deadline is met exactly, then it gives up.
    expect(waits[0]).toBeCloseTo(999, 6);
    expect(waits[1]).toBeCloseTo(1998, 6);
    expect(waits[2]).toBeCloseTo(5000 - 999 - 1998, 6);
    expect(clock.now).toBeCloseTo(5000, 6);
    expect(call.calls()).toBe(4);
  });

  it("reports recovery through onSuccess with the number of tries", async () => {
    const { deps } = fakeTime(() => 0.5);
    const successes: RetryState[] = [];
    const backoffs: RetryState[] = [];
    const invoker = new RetryInvoker(
      {},
      { ...deps, onSuccess: (s) => successes.push(s), onBackoff: (s) => backoffs.push(s) },
    );
    await invoker.invoke("Ping", flaky(2).fn);
    expect(successes.map((s) => s.tries)).toEqual([3]);
    expect(backoffs.map((s) => [s.tries, s.waitMs])).toEqual([
      [1, 500],
      [2, 1000],
    ]);
  });

  it("lets the caller shorten a wait (the ping loop after a deadline)", async () => {
    const { deps, waits } = fakeTime(() => 0.5);
    const call = flaky(2, () => serviceError(grpc.status.DEADLINE_EXCEEDED, "Deadline exceeded"));
    await new RetryInvoker({}, deps).invoke("Ping", call.fn, { adjustWaitMs: (w) => Math.max(w - 700, 0) });
    expect(waits).toEqual([0, 300]);
  });

  it.each([
    ["DEADLINE_EXCEEDED", grpc.status.DEADLINE_EXCEEDED],
    ["RESOURCE_EXHAUSTED", grpc.status.RESOURCE_EXHAUSTED],
    ["UNKNOWN", grpc.status.UNKNOWN],
    ["UNAVAILABLE", grpc.status.UNAVAILABLE],
    ["INTERNAL", grpc.status.INTERNAL],
  ])("retries %s", async (_name, code) => {
    const { deps } = fakeTime(() => 0.5);
    const call = flaky(2, () => serviceError(code, "transient"));
    await expect(new RetryInvoker({}, deps).invoke("PullTaskIns", call.fn)).resolves.toBe("ok");
    expect(call.calls()).toBe(3);
  });

  it("stops at once on UNAUTHENTICATED with the allowlist hint", async () => {
    const { deps, waits } = fakeTime(() => 0.5);
    const call = flaky(100, () => serviceError(grpc.status.UNAUTHENTICATED, "Access denied"));
    const err = await new RetryInvoker({}, deps).invoke("CreateNode", call.fn).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as Error).message).toContain(
      "refused CreateNode: access denied: is this node's public key in the SuperLink's allowlist?",
    );
    expect(call.calls()).toBe(1);
    expect(waits).toEqual([]);
  });

  it("stops at once on a TLS certificate failure, pointing at --root-certificates", async () => {
    const { deps } = fakeTime(() => 0.5);
    const certificate = serviceError(
      grpc.status.UNAVAILABLE,
      "No connection established. Last error: Error: self-signed certificate in certificate chain",
    );
    const call = flaky(100, () => certificate);
    const err = await new RetryInvoker({}, deps).invoke("CreateNode", call.fn).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidConfigError);
    expect((err as Error).message).toMatch(
      /TLS certificate verification .* failed .*self-signed certificate in certificate chain.*--root-certificates/,
    );
    expect(call.calls()).toBe(1);
  });

  it("rethrows errors that are not gRPC failures unchanged, without retrying", async () => {
    const { deps } = fakeTime(() => 0.5);
    const bug = new TypeError("local bug");
    const call = flaky(100, () => bug);
    await expect(new RetryInvoker({}, deps).invoke("PushTaskRes", call.fn)).rejects.toBe(bug);
    expect(call.calls()).toBe(1);
  });

  it("stops waiting and rejects with the abort reason when the signal aborts", async () => {
    const controller = new AbortController();
    const reason = new Error("stopping");
    const call = flaky(100);
    const invoker = new RetryInvoker({}, { random: () => 0.9 });
    const pending = invoker.invoke("PullTaskIns", call.fn, { signal: controller.signal });
    await new Promise((r) => setImmediate(r));
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
    expect(call.calls()).toBe(1);
  });

  it("treats a failure of a call it cancelled itself as the abort, not as a retryable error", async () => {
    const controller = new AbortController();
    const { deps } = fakeTime(() => 0.5);
    const reason = new Error("stopping");
    let calls = 0;
    const fn = async (): Promise<string> => {
      calls += 1;
      controller.abort(reason);
      throw serviceError(grpc.status.CANCELLED, "Cancelled on client");
    };
    await expect(new RetryInvoker({}, deps).invoke("PullTaskIns", fn, { signal: controller.signal })).rejects.toBe(
      reason,
    );
    expect(calls).toBe(1);
  });

  it("rejects invalid policies", () => {
    expect(() => new RetryInvoker({ maxRetries: -1 })).toThrow(InvalidConfigError);
    expect(() => new RetryInvoker({ maxRetries: 1.5 })).toThrow(InvalidConfigError);
    expect(() => new RetryInvoker({ maxWaitTimeMs: Number.NaN })).toThrow(InvalidConfigError);
    expect(() => new RetryInvoker({ multiplier: 0.5 })).toThrow(InvalidConfigError);
  });
});

describe("classifyFleetError", () => {
  it("recognises Node's certificate verification failures only under UNAVAILABLE", () => {
    for (const details of [
      "No connection established. Last error: Error: unable to verify the first certificate",
      "No connection established. Last error: Error: Hostname/IP does not match certificate's altnames: IP: 10.0.0.1 is not in the cert's list: 127.0.0.1",
      "No connection established. Last error: Error: unable to get local issuer certificate",
      "No connection established. Last error: Error: certificate has expired",
    ]) {
      expect(isCertificateFailure(serviceError(grpc.status.UNAVAILABLE, details))).toBe(true);
    }
    expect(isCertificateFailure(unavailable())).toBe(false);
    expect(isCertificateFailure(serviceError(grpc.status.UNKNOWN, "certificate"))).toBe(false);
  });

  it("stops at once when the SuperLink answers the TLS handshake in plaintext (it runs --insecure)", () => {
    const verdict = classifyFleetError(
      serviceError(
        grpc.status.UNAVAILABLE,
        "No connection established. Last error: Error: 802CC4C3557F0000:error:0A00010B:SSL routines:ssl3_get_record:" +
          "wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n. Resolution note: ",
      ),
      { what: "CreateNode", target: "127.0.0.1:9092" },
    );
    expect(verdict.kind).toBe("fatal");
    const error = (verdict as { error: Error }).error;
    expect(error).toBeInstanceOf(InvalidConfigError);
    expect(error.message).toMatch(
      /^The SuperLink at 127\.0\.0\.1:9092 does not speak TLS \(.*wrong version number\): it probably runs with --insecure/,
    );
    expect(error.message).not.toContain("Resolution note");
    expect(error.message).not.toContain("deps/openssl");
  });

  it("explains a refusal to a node without keys as missing authentication", () => {
    const verdict = classifyFleetError(serviceError(grpc.status.UNAUTHENTICATED, "Access denied"), {
      what: "CreateNode",
      target: "127.0.0.1:9092",
      authenticated: false,
    });
    expect(verdict.kind).toBe("fatal");
    const error = (verdict as { error: Error }).error;
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(error.message).toContain("requires node authentication");
    expect(error.message).toContain("--auth-supernode-private-key");
  });

  it("points UNIMPLEMENTED at the wrong port and maps other statuses to typed errors", () => {
    const unimplemented = classifyFleetError(
      serviceError(grpc.status.UNIMPLEMENTED, "The server does not implement the method"),
      {
        what: "CreateNode",
      },
    );
    expect((unimplemented as { error: Error }).error).toBeInstanceOf(InvalidConfigError);
    expect((unimplemented as { error: Error }).error.message).toContain("Fleet API address");
    const notFound = classifyFleetError(serviceError(grpc.status.NOT_FOUND, "Node 5 not found"), {
      what: "DeleteNode",
    });
    expect((notFound as { error: Error }).error).toBeInstanceOf(NotFoundError);
  });

  it("keeps a CANCELLED it did not ask for retryable (the peer went away)", () => {
    expect(classifyFleetError(serviceError(grpc.status.CANCELLED, "Cancelled")).kind).toBe("retryable");
  });
});

describe("abortableSleep", () => {
  it("resolves after the time, and rejects at once with the reason when aborted", async () => {
    await expect(abortableSleep(1)).resolves.toBeUndefined();
    const controller = new AbortController();
    const pending = abortableSleep(60_000, controller.signal);
    controller.abort(new Error("stop"));
    await expect(pending).rejects.toThrow("stop");
    const aborted = new AbortController();
    aborted.abort(new Error("already"));
    await expect(abortableSleep(10, aborted.signal)).rejects.toThrow("already");
  });
});
