/**
 * startClient with node authentication keys (given as key text and as paths) against a real
 * SuperLink with TLS + allowlist; and the package barrel (src/index.ts): its public names, and
 * that importing it does not load TensorFlow.js.
 */
import { Allowlist } from "../../src/auth/allowlist";
import { loadKeyPairFiles } from "../../src/auth/keys";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startClient } from "../../src/compat";
import { NumPyClient } from "../../src/client/numpy-client";
import type { NDArrays } from "../../src/core/records/types";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { readServerTlsFiles } from "../../src/transport/tls";
import { requireDist } from "../helpers/dist";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { f32, memoryLogger } from "../server/helpers";

class TinyClient extends NumPyClient {
  override getParameters(): NDArrays {
    return [f32([0])];
  }
}

let fx: Fixtures;
let strangerFx: Fixtures;
let link: SuperLinkHandle;

beforeAll(async () => {
  fx = generateFixtures(1);
  strangerFx = generateFixtures(1);
  link = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: ":flwr-in-memory-state:",
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
      auth: {
        allowlist: Allowlist.fromCsvFile(fx.allowlistCsv),
        superlinkKeys: loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey),
        watchAllowlist: false,
      },
    },
    { logger: memoryLogger("warn").logger },
  );
});
afterAll(async () => {
  await link?.close();
  fx?.cleanup();
  strangerFx?.cleanup();
});

/** Runs startClient until it registered, then aborts it; resolves with the node id. */
async function registerThenStop(authKeys: {
  privateKey: string | Buffer;
  publicKey: string | Buffer;
}): Promise<bigint> {
  const abort = new AbortController();
  let nodeId = 0n;
  const run = startClient(`127.0.0.1:${link.fleetPort}`, {
    client: new TinyClient(),
    rootCertificates: fx.read(fx.caCert),
    transport: "grpc-rere",
    authKeys,
    logger: memoryLogger("warn").logger,
    signal: abort.signal,
    onReady: (info) => {
      nodeId = info.nodeId;
      abort.abort();
    },
  });
  await expect(run).resolves.toBeUndefined();
  return nodeId;
}

describe("startClient authKeys", () => {
  it("accepts the keys as OpenSSH text", async () => {
    const nodeId = await registerThenStop({
      privateKey: readFileSync(fx.clientPrivateKeys[0]!, "utf8"),
      publicKey: readFileSync(fx.clientPublicKeys[0]!, "utf8"),
    });
    expect(nodeId).not.toBe(0n);
  });

  it("accepts the keys as Buffers", async () => {
    const nodeId = await registerThenStop({
      privateKey: fx.read(fx.clientPrivateKeys[0]!),
      publicKey: fx.read(fx.clientPublicKeys[0]!),
    });
    expect(nodeId).not.toBe(0n);
  });

  it("accepts the keys as file paths", async () => {
    const nodeId = await registerThenStop({ privateKey: fx.clientPrivateKeys[0]!, publicKey: fx.clientPublicKeys[0]! });
    expect(nodeId).not.toBe(0n);
  });

  it("a key missing from the allowlist is refused with AuthenticationError", async () => {
    const run = startClient(`127.0.0.1:${link.fleetPort}`, {
      client: new TinyClient(),
      rootCertificates: fx.read(fx.caCert),
      transport: "grpc-rere",
      authKeys: {
        privateKey: readFileSync(strangerFx.clientPrivateKeys[0]!, "utf8"),
        publicKey: readFileSync(strangerFx.clientPublicKeys[0]!, "utf8"),
      },
      logger: memoryLogger("error").logger,
    });
    await expect(run).rejects.toMatchObject({ name: "AuthenticationError", code: "FLWR_AUTHENTICATION_FAILED" });
  });

  it("a private key text that does not match the public key is an InvalidKeyFileError", async () => {
    const run = startClient(`127.0.0.1:${link.fleetPort}`, {
      client: new TinyClient(),
      rootCertificates: fx.read(fx.caCert),
      transport: "grpc-rere",
      authKeys: {
        privateKey: readFileSync(strangerFx.clientPrivateKeys[0]!, "utf8"),
        publicKey: readFileSync(fx.clientPublicKeys[0]!, "utf8"),
      },
      logger: memoryLogger("error").logger,
    });
    await expect(run).rejects.toMatchObject({ name: "InvalidKeyFileError" });
  });
});

describe("package barrel (src/index.ts, as the package's main dist/index.js)", () => {
  it("exports the public API and does not load TensorFlow.js", () => {
    // The compiled barrel, as users load it (compiling src/ in a child with ts-node took seconds).
    requireDist();
    const script = [
      `const api = require(${JSON.stringify(join(REPO_ROOT, "dist", "index.js"))});`,
      `const names = ["startServer", "startClient", "startNumpyClient", "ClientApp", "NumPyClient", "ServerApp", "FedAvg", "History",`,
      `  "RecordSet", "createReply", "ndarraysToParameters", "parametersToNdarrays", "FlwrError", "startSuperLink"];`,
      `const missing = names.filter((n) => api[n] === undefined);`,
      `const tf = Object.keys(require.cache).filter((k) => k.includes("@tensorflow"));`,
      `console.log(JSON.stringify({ missing, tf: tf.length }));`,
    ].join("\n");
    const output = execFileSync(process.execPath, ["-e", script], {
      cwd: REPO_ROOT,
      encoding: "utf8",
    });
    expect(JSON.parse(output.trim().split("\n").pop()!)).toEqual({ missing: [], tf: 0 });
  });
});
