/**
 * HMAC keys derived ahead of registration in a worker thread (src/auth/hmac-key-precompute.ts):
 * the same bytes as the on-demand `diffieHellman` path on every curve, used by the
 * authenticator, dropped with their key, followed for keys added to a watched allowlist file,
 * and stoppable mid-way with nothing left in flight.
 */
import type { KeyObject } from "node:crypto";
import { writeFileSync } from "node:fs";
import { Writable } from "node:stream";
import { Allowlist } from "../../src/auth/allowlist";
import { computeAuthToken, deriveHmacKey } from "../../src/auth/crypto";
import { HmacKeyPrecomputer } from "../../src/auth/hmac-key-precompute";
import { loadPrivateKeyFile, loadPublicKeyFile, publicPemOf } from "../../src/auth/keys";
import { FleetAuthenticator, type FleetAuthState } from "../../src/auth/server-auth";
import { createLogger } from "../../src/core/logger";
import { PingRequest } from "../../src/proto/flwr/proto/fleet";
import { csvElementOf, makeKeyDir } from "./key-helpers";
import { generateEcKeyPair } from "../helpers/ec-keys";

const CURVES = { "P-256": "prime256v1", "P-384": "secp384r1", "P-521": "secp521r1" } as const;

function ecKey(curve: keyof typeof CURVES): { privateKey: KeyObject; pem: string } {
  const { privateKey } = generateEcKeyPair(CURVES[curve]);
  return { privateKey, pem: publicPemOf(privateKey) };
}

class MapState implements FleetAuthState {
  private readonly keys = new Map<string, bigint>();
  private next = 1n;
  async getNodeId(publicKey: Uint8Array): Promise<bigint | undefined> {
    return this.keys.get(Buffer.from(publicKey).toString("latin1"));
  }
  async createNode(_pingInterval: number, publicKey: Uint8Array): Promise<bigint> {
    const id = this.next++;
    this.keys.set(Buffer.from(publicKey).toString("latin1"), id);
    return id;
  }
  async acknowledgePing(): Promise<boolean> {
    return true;
  }
  async getNodes(): Promise<Set<bigint>> {
    return new Set();
  }
}

function memoryLogger(): { logger: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line) as never);
      done();
    },
  });
  return { logger: createLogger({ level: "debug" }, sink), lines };
}

async function until(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A MAC'd Ping of `nodeId` as a SuperNode holding `nodeKey` sends it. */
async function ping(
  authenticator: FleetAuthenticator,
  nodeKey: { privateKey: KeyObject; pem: string },
  serverPem: string,
): Promise<{ ok: boolean }> {
  const nodeId = await authenticator.registerNode(nodeKey.pem, 30);
  const request = PingRequest.fromPartial({ node: { nodeId, anonymous: false }, pingInterval: 30 });
  const raw = PingRequest.encode(request).finish();
  const token = computeAuthToken(deriveHmacKey(nodeKey.privateKey, serverPem), raw);
  const header = (pem: string): string => Buffer.from(pem, "latin1").toString("base64");
  return authenticator.authenticate(
    "PingRequest",
    request,
    { publicKey: header(nodeKey.pem), authToken: token.toString("base64") },
    raw,
  );
}

test.each(Object.keys(CURVES) as Array<keyof typeof CURVES>)(
  "on %s the worker's derivation gives the on-demand HMAC key and MACs",
  async (curve) => {
    const server = ecKey(curve);
    // More keys than one batch to the worker.
    const nodes = Array.from({ length: 10 }, () => ecKey(curve));
    const derived = new Map<string, Buffer>();
    const precomputer = new HmacKeyPrecomputer({
      privateKey: server.privateKey,
      onDerived: (pem, key) => derived.set(pem, key),
    });
    precomputer.add(nodes.map((n) => n.pem));
    await until(() => derived.size === nodes.length, "every key derived");
    await precomputer.settled();
    for (const node of nodes) {
      const precomputed = derived.get(node.pem)!;
      expect(precomputed).toEqual(deriveHmacKey(server.privateKey, node.pem));
      // Both sides agree: the node derives the same key from the server's public key.
      expect(precomputed).toEqual(deriveHmacKey(node.privateKey, server.pem));
      expect(computeAuthToken(precomputed, Buffer.from("payload"))).toEqual(
        computeAuthToken(deriveHmacKey(server.privateKey, node.pem), Buffer.from("payload")),
      );
    }
  },
);

test("a key on another curve is reported as failed and left to the on-demand path", async () => {
  const server = ecKey("P-384");
  const good = ecKey("P-384");
  const other = ecKey("P-256");
  const derived = new Map<string, Buffer>();
  const failed: string[] = [];
  let summary: { derived: number; failed: number } | undefined;
  const precomputer = new HmacKeyPrecomputer({
    privateKey: server.privateKey,
    onDerived: (pem, key) => derived.set(pem, key),
    onFailed: (pem) => failed.push(pem),
    onFinished: (s) => (summary = s),
  });
  precomputer.add([other.pem, good.pem]);
  await until(() => summary !== undefined, "the batch to finish");
  expect(summary).toMatchObject({ derived: 1, failed: 1 });
  expect(failed).toEqual([other.pem]);
  expect(derived.get(good.pem)).toEqual(deriveHmacKey(server.privateKey, good.pem));
  await precomputer.settled();
});

test("precomputed keys authenticate nodes; a removed key is refused at once and dropped", async () => {
  const keys = makeKeyDir();
  const server = ecKey("P-384");
  const nodeFiles = [0, 1, 2].map((i) => keys.sshKeygen(`node${i}`, ["-t", "ecdsa", "-b", "384"]));
  const nodes = nodeFiles.map((f) => ({ privateKey: loadPrivateKeyFile(f), pem: loadPublicKeyFile(`${f}.pub`) }));
  const csv = keys.path("allowlist.csv");
  writeFileSync(csv, `${nodeFiles.map((f) => csvElementOf(`${f}.pub`)).join(",")}\n`);
  const { logger, lines } = memoryLogger();
  const allowlist = Allowlist.fromCsvFile(csv);
  const authenticator = new FleetAuthenticator({
    allowlist,
    serverPrivateKey: server.privateKey,
    serverPublicKeyPem: server.pem,
    state: new MapState(),
    logger,
    precomputeHmacKeys: true,
  });
  try {
    await until(() => authenticator.precomputedKeys === 3, "3 precomputed keys");
    expect(lines.find((l) => l["event"] === "superlink.hmac-keys-precomputed")).toMatchObject({
      derived: 3,
      failed: 0,
    });
    for (const node of nodes) expect(await ping(authenticator, node, server.pem)).toMatchObject({ ok: true });
    // Served from the precomputed keys: nothing was derived on demand.
    expect(authenticator.cachedKeys).toBe(0);

    const removed = nodes[0]!;
    writeFileSync(
      csv,
      `${nodeFiles
        .slice(1)
        .map((f) => csvElementOf(`${f}.pub`))
        .join(",")}\n`,
    );
    expect(allowlist.reload().removed).toEqual([removed.pem]);
    expect(authenticator.precomputedKeys).toBe(2);
    expect(await ping(authenticator, removed, server.pem)).toMatchObject({
      ok: false,
      reason: "public key not in the allowlist",
    });
    expect(await ping(authenticator, nodes[1]!, server.pem)).toMatchObject({ ok: true });
  } finally {
    authenticator.close();
    await authenticator.settled();
    keys.cleanup();
  }
});

test("a key not precomputed yet is served on demand, with neither waiting nor refusal", async () => {
  const server = ecKey("P-384");
  const node = ecKey("P-384");
  const authenticator = new FleetAuthenticator({
    allowlist: new Allowlist([node.pem]),
    serverPrivateKey: server.privateKey,
    serverPublicKeyPem: server.pem,
    state: new MapState(),
    precomputeHmacKeys: true,
  });
  try {
    // Right away: the precomputation (thread pool) cannot have landed before this first call.
    expect(authenticator.precomputedKeys).toBe(0);
    expect(await ping(authenticator, node, server.pem)).toMatchObject({ ok: true });
    expect(authenticator.cachedKeys).toBe(1);
    await until(() => authenticator.precomputedKeys === 1, "the precomputed key");
    // The precomputed key replaces the on-demand one (no second copy in the LRU).
    expect(authenticator.cachedKeys).toBe(0);
    expect(await ping(authenticator, node, server.pem)).toMatchObject({ ok: true });
  } finally {
    authenticator.close();
    await authenticator.settled();
  }
});

test("a key added to a watched allowlist file is precomputed and works", async () => {
  const keys = makeKeyDir();
  const serverFile = keys.sshKeygen("server", ["-t", "ecdsa", "-b", "384"]);
  const server = { privateKey: loadPrivateKeyFile(serverFile), pem: loadPublicKeyFile(`${serverFile}.pub`) };
  const nodeFiles = [0, 1].map((i) => keys.sshKeygen(`node${i}`, ["-t", "ecdsa", "-b", "384"]));
  const nodes = nodeFiles.map((f) => ({ privateKey: loadPrivateKeyFile(f), pem: loadPublicKeyFile(`${f}.pub`) }));
  const csv = keys.path("allowlist.csv");
  writeFileSync(csv, `${csvElementOf(`${nodeFiles[0]!}.pub`)}\n`);
  const allowlist = Allowlist.fromCsvFile(csv, { watch: true, watchIntervalMs: 20 });
  const authenticator = new FleetAuthenticator({
    allowlist,
    serverPrivateKey: server.privateKey,
    serverPublicKeyPem: server.pem,
    state: new MapState(),
    precomputeHmacKeys: true,
  });
  try {
    await until(() => authenticator.precomputedKeys === 1, "the first key precomputed");
    writeFileSync(csv, `${nodeFiles.map((f) => csvElementOf(`${f}.pub`)).join(",")}\n`);
    await until(() => authenticator.precomputedKeys === 2, "the added key precomputed");
    expect(await ping(authenticator, nodes[1]!, server.pem)).toMatchObject({ ok: true });
    expect(authenticator.cachedKeys).toBe(0);
  } finally {
    authenticator.close();
    allowlist.close();
    await authenticator.settled();
    keys.cleanup();
  }
});

test("closing mid-precomputation stops it: nothing more derived, nothing left in flight", async () => {
  const server = ecKey("P-384");
  const pems = Array.from({ length: 200 }, () => ecKey("P-384").pem);
  const { logger, lines } = memoryLogger();
  const authenticator = new FleetAuthenticator({
    allowlist: new Allowlist(pems),
    serverPrivateKey: server.privateKey,
    serverPublicKeyPem: server.pem,
    state: new MapState(),
    logger,
    precomputeHmacKeys: true,
  });
  await until(() => authenticator.precomputedKeys >= 1, "a first precomputed key");
  authenticator.close();
  await authenticator.settled();
  const stoppedAt = authenticator.precomputedKeys;
  expect(stoppedAt).toBeLessThan(pems.length);
  await new Promise((resolve) => setTimeout(resolve, 100));
  expect(authenticator.precomputedKeys).toBe(stoppedAt);
  expect(lines.some((l) => l["event"] === "superlink.hmac-keys-precomputed")).toBe(false);
});
