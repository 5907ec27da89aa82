/**
 * flower-superlink command line, run in-process through main(): every refused configuration
 * exits with code 2 and says what to do, without a stack trace.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { main } from "../../src/cli/flower-superlink";
import { isLoopbackHost } from "../../src/cli/common";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";

let fx: Fixtures;
beforeAll(() => {
  fx = generateFixtures(1);
});
afterAll(() => fx.cleanup());

interface Outcome {
  code: number;
  logs: Array<Record<string, unknown>>;
  out: string;
  err: string;
}

async function runCli(args: string[]): Promise<Outcome> {
  const logs: Array<Record<string, unknown>> = [];
  let out = "";
  let err = "";
  const logDestination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const code = await main(
    ["node", "flower-superlink", "--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0", ...args],
    {
      writeOut: (s) => (out += s),
      writeErr: (s) => (err += s),
      logDestination,
    },
  );
  return { code, logs, out, err };
}

/** The fatal log line's message (what the user reads). */
function fatal(o: Outcome): string {
  const line = o.logs.find((l) => l["level"] === 60);
  expect(line).toBeDefined();
  expect(JSON.stringify(line)).not.toContain("    at "); // no stack trace
  return String(line!["msg"]);
}

const tlsArgs = (): string[] => [
  "--ssl-ca-certfile",
  fx.caCert,
  "--ssl-certfile",
  fx.serverCert,
  "--ssl-keyfile",
  fx.serverKey,
];
const authArgs = (): string[] => [
  "--auth-list-public-keys",
  fx.allowlistCsv,
  "--auth-superlink-private-key",
  fx.superlinkPrivateKey,
  "--auth-superlink-public-key",
  fx.superlinkPublicKey,
];

test("no certificates and no --insecure: exit 2, certificates are required", async () => {
  const o = await runCli([]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain("Certificates are required unless running in insecure mode");
});

test("only some certificate flags: exit 2, all three are needed", async () => {
  const o = await runCli(["--ssl-certfile", fx.serverCert]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain("`--ssl-certfile`, `--ssl-keyfile`, and `--ssl-ca-certfile`");
});

test("--insecure together with certificates: exit 2, conflicting options", async () => {
  const o = await runCli(["--insecure", ...tlsArgs()]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain("--insecure cannot be combined");
});

test("authentication with --insecure: exit 2, authentication requires secure connections", async () => {
  const o = await runCli(["--insecure", ...authArgs()]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain("Authentication requires secure connections");
});

test("only some authentication flags: exit 2, provide all three", async () => {
  const o = await runCli([...tlsArgs(), "--auth-list-public-keys", fx.allowlistCsv]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain("Provide all three to enable authentication");
});

test("a nonexistent key file: exit 2, naming the file", async () => {
  const missing = join(fx.dir, "no-such-key");
  const args = authArgs();
  args[3] = missing;
  const o = await runCli([...tlsArgs(), ...args]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain(missing);
});

test("a nonexistent allowlist CSV: exit 2, naming the file", async () => {
  const missing = join(fx.dir, "no-such.csv");
  const args = authArgs();
  args[1] = missing;
  const o = await runCli([...tlsArgs(), ...args]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain(missing);
});

test("a garbage PEM certificate: exit 2, naming the file", async () => {
  const garbage = join(fx.dir, "garbage.pem");
  writeFileSync(garbage, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
  const o = await runCli(["--ssl-ca-certfile", fx.caCert, "--ssl-certfile", garbage, "--ssl-keyfile", fx.serverKey]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain(garbage);
});

test("a garbage private key file: exit 2", async () => {
  const garbage = join(fx.dir, "garbage-key");
  writeFileSync(garbage, "this is not a key\n");
  const args = authArgs();
  args[3] = garbage;
  const o = await runCli([...tlsArgs(), ...args]);
  expect(o.code).toBe(2);
  expect(fatal(o).length).toBeGreaterThan(0);
});

test("a SuperLink public key that does not belong to the private key: exit 2", async () => {
  const args = authArgs();
  args[5] = fx.clientPublicKeys[0]!;
  const o = await runCli([...tlsArgs(), ...args]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toMatch(/not the public key of/);
});

test("--fleet-api-type grpc-adapter: exit 2, not supported by flwr-ts; rest is", async () => {
  const o = await runCli(["--insecure", "--fleet-api-type", "grpc-adapter"]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain("not supported by flwr-ts");
});

test("--rest-cors-origins must list origins (no paths): exit 2", async () => {
  const o = await runCli(["--insecure", "--fleet-api-type", "rest", "--rest-cors-origins", "https://app.example.org/"]);
  expect(o.code).toBe(2);
  expect(fatal(o)).toContain('did you mean "https://app.example.org"');
});

test("invalid numbers and unknown flags are usage errors with exit 2", async () => {
  const negative = await runCli(["--insecure", "--long-poll-ms", "-5"]);
  expect(negative.code).toBe(2);
  expect(negative.err).toContain("--long-poll-ms must be a non-negative integer");
  const unknown = await runCli(["--insecure", "--no-such-flag"]);
  expect(unknown.code).toBe(2);
  expect(unknown.err).toContain("unknown option");
  const level = await runCli(["--insecure", "--log-level", "loud"]);
  expect(level.code).toBe(2);
});

test("Fleet API byte budgets must be positive sizes (bytes, or KiB/MiB/GiB): otherwise exit 2", async () => {
  for (const [flag, value] of [
    ["--fleet-unauthenticated-bytes-total", "0"],
    ["--fleet-unauthenticated-bytes-per-connection", "12XB"],
    ["--fleet-unauthenticated-bytes-per-connection", "-1"],
  ] as const) {
    const o = await runCli(["--insecure", flag, value]);
    expect(o.code).toBe(2);
    expect(o.err).toContain(`${flag} must be a positive number of bytes`);
  }
  // The large-result budget may be 0 (off), never negative.
  const negative = await runCli(["--insecure", "--fleet-large-result-budget-bytes", "-1"]);
  expect(negative.code).toBe(2);
  expect(negative.err).toContain("--fleet-large-result-budget-bytes must be a non-negative number of bytes");
});

test("--help prints the flags and exits 0", async () => {
  const o = await runCli(["--help"]);
  expect(o.code).toBe(0);
  for (const flag of [
    "--driver-api-address",
    "--fleet-api-address",
    "--database",
    "--insecure",
    "--ssl-ca-certfile",
    "--auth-list-public-keys",
    "--long-poll-ms",
    "--metrics-address",
    "--fleet-unauthenticated-bytes-per-connection",
    "--fleet-unauthenticated-bytes-total",
    "--fleet-large-result-budget-bytes",
  ]) {
    expect(o.out).toContain(flag);
  }
});

describe("--driver-api-client-ca (mutual TLS on the Driver API)", () => {
  test("with --insecure: exit 2, it needs TLS", async () => {
    const o = await runCli(["--insecure", "--driver-api-client-ca", fx.serverappCaCert]);
    expect(o.code).toBe(2);
    expect(fatal(o)).toContain("--driver-api-client-ca (mutual TLS on the Driver API) needs TLS");
  });

  test("a leaf certificate instead of a CA: exit 2, says which file to pass", async () => {
    const o = await runCli([...tlsArgs(), "--driver-api-client-ca", fx.serverappCert]);
    expect(o.code).toBe(2);
    expect(fatal(o)).toMatch(/--driver-api-client-ca ".*serverapp\.pem" is not a CA certificate.*serverapp-ca\.crt/);
  });

  test("a missing file: exit 2, naming it", async () => {
    const o = await runCli([...tlsArgs(), "--driver-api-client-ca", join(fx.dir, "nope.crt")]);
    expect(o.code).toBe(2);
    expect(fatal(o)).toContain("nope.crt");
  });

  test("--help lists it", async () => {
    const o = await runCli(["--help"]);
    expect(o.out).toContain("--driver-api-client-ca");
  });
});

describe("which Driver API addresses count as loopback (no open-Driver-API warning)", () => {
  // The warning itself is checked with real processes in driver-mtls.e2e.test.ts.
  test.each(["0.0.0.0", "::", "10.1.2.3", "superlink.example.org", "::ffff:10.0.0.1", "128.0.0.1"])(
    "%s: reachable from outside",
    (host) => {
      expect(isLoopbackHost(host)).toBe(false);
    },
  );
  test.each(["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST", "::ffff:127.0.0.1"])(
    "%s: loopback",
    (host) => {
      expect(isLoopbackHost(host)).toBe(true);
    },
  );
});

test("connection-limit flags: documented in --help, bounded, and reach the config", async () => {
  const help = await runCli(["--help"]);
  for (const flag of [
    "--max-connection-idle-ms",
    "--max-connection-age-ms",
    "--max-connection-age-grace-ms",
    "--request-receive-timeout-ms",
    "--min-request-receive-rate",
  ]) {
    expect(help.out).toContain(flag);
  }
  // Above 2^31-1 ms, Node timers fire at once: refused rather than silently closing everything.
  const huge = await runCli(["--insecure", "--max-connection-idle-ms", String(2 ** 31)]);
  expect(huge.code).toBe(2);
  expect(huge.err).toContain("--max-connection-idle-ms must be at most");
  const negative = await runCli(["--insecure", "--min-request-receive-rate", "-1"]);
  expect(negative.code).toBe(2);
});
