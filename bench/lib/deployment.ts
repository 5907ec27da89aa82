/**
 * The pieces of a TLS + node-authentication deployment the scenarios share: credentials made by
 * scripts/generate.sh in a temp dir, a SuperLink child on 127.0.0.1:0, SuperNode children
 * running a ClientApp file, and a ServerApp child.
 */
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Child, REPO_ROOT, type LogRecord, startDaemon } from "./processes";

export interface Credentials {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  serverPrivateKey: string;
  serverPublicKey: string;
  allowlistCsv: string;
  /** Number of SuperNode key pairs made. */
  numNodes: number;
  /** Key pair of SuperNode `i` (1-based). */
  nodeKeys(i: number): { privateKeyPath: string; publicKeyPath: string };
}

/**
 * Key pairs generate.sh makes (ssh-keygen, ~30 ms each); beyond them the bench makes the rest
 * itself (addNodeKeyPairs), so 10,000 pairs take seconds instead of 5 minutes.
 */
const SSH_KEYGEN_PAIRS = 100;

/** SSH wire-format string: uint32 length + bytes. */
function sshString(bytes: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/**
 * SuperNode key pairs `first`..`last` made with node:crypto: ECDSA P-384 as generate.sh's, the
 * private key in PEM (PKCS#8, which SuperNodes accept beside OpenSSH's format), the public key
 * as an OpenSSH line; appended to the allowlist CSV.
 */
function addNodeKeyPairs(keysDir: string, first: number, last: number): void {
  const lines: string[] = [];
  for (let i = first; i <= last; i++) {
    // Encoded by the generating job itself: exporting the KeyObjects it returns can deadlock
    // Node 20 when a collection destroys the job meanwhile (test/helpers/ec-keys.ts).
    const { privateKey, publicKey } = generateKeyPairSync("ec", {
      namedCurve: "secp384r1",
      publicKeyEncoding: { type: "spki", format: "der" },
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
    });
    // The uncompressed point ends the SPKI DER.
    const point = publicKey.subarray(-97);
    const type = "ecdsa-sha2-nistp384";
    const blob = Buffer.concat([sshString(Buffer.from(type)), sshString(Buffer.from("nistp384")), sshString(point)]);
    const line = `${type} ${blob.toString("base64")}`;
    writeFileSync(join(keysDir, `client_credentials_${i}`), privateKey, { mode: 0o600 });
    writeFileSync(join(keysDir, `client_credentials_${i}.pub`), `${line}\n`);
    lines.push(line);
  }
  const csv = join(keysDir, "client_public_keys.csv");
  writeFileSync(csv, `${[readFileSync(csv, "utf8").trim(), ...lines].join(",")}\n`);
}

/** Runs scripts/generate.sh N DIR (or another script taking the same arguments): a CA, the server certificate, the SuperLink key pair and N SuperNode key pairs. */
export function generateCredentials(
  numNodes: number,
  dir: string,
  script = join(REPO_ROOT, "scripts", "generate.sh"),
): Credentials {
  const r = spawnSync("bash", [script, String(Math.min(numNodes, SSH_KEYGEN_PAIRS)), dir], {
    cwd: REPO_ROOT,
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`scripts/generate.sh failed (${r.status}): ${r.stderr}`);
  const certs = join(dir, "certificates");
  const keys = join(dir, "keys");
  if (numNodes > SSH_KEYGEN_PAIRS) addNodeKeyPairs(keys, SSH_KEYGEN_PAIRS + 1, numNodes);
  return {
    dir,
    caCert: join(certs, "ca.crt"),
    serverCert: join(certs, "server.pem"),
    serverKey: join(certs, "server.key"),
    serverPrivateKey: join(keys, "server_credentials"),
    serverPublicKey: join(keys, "server_credentials.pub"),
    allowlistCsv: join(keys, "client_public_keys.csv"),
    numNodes,
    nodeKeys(i: number) {
      if (i < 1 || i > numNodes) throw new Error(`bench: no key pair for SuperNode ${i} (made ${numNodes})`);
      return {
        privateKeyPath: join(keys, `client_credentials_${i}`),
        publicKeyPath: join(keys, `client_credentials_${i}.pub`),
      };
    },
  };
}

export interface SuperLinkChild {
  child: Child;
  driverAddress: string;
  fleetAddress: string;
  metricsAddress: string;
}

/**
 * How the daemons of a scenario talk: TLS with SuperNode authentication (the default, as a real
 * deployment), TLS alone, or plaintext without authentication (to show what TLS and the MACs
 * each cost).
 */
export type Security = "tls+auth" | "tls" | "plaintext";

/**
 * Starts flower-superlink with in-memory state and metrics, all on 127.0.0.1:0, with TLS and node
 * authentication as `security` says.
 */
export async function startSuperLinkChild(
  creds: Credentials,
  logDir: string,
  name = "superlink",
  security: Security = "tls+auth",
  extraArgs: readonly string[] = [],
): Promise<SuperLinkChild> {
  const child = startDaemon(name, "flower-superlink", {
    logDir,
    args: [
      ...(security === "plaintext"
        ? ["--insecure"]
        : [
            "--ssl-ca-certfile",
            creds.caCert,
            "--ssl-certfile",
            creds.serverCert,
            "--ssl-keyfile",
            creds.serverKey,
            ...(security === "tls+auth"
              ? [
                  "--auth-list-public-keys",
                  creds.allowlistCsv,
                  "--auth-superlink-private-key",
                  creds.serverPrivateKey,
                  "--auth-superlink-public-key",
                  creds.serverPublicKey,
                ]
              : []),
          ]),
      "--driver-api-address",
      "127.0.0.1:0",
      "--fleet-api-address",
      "127.0.0.1:0",
      "--metrics-address",
      "127.0.0.1:0",
      ...extraArgs,
    ],
  });
  try {
    const ready = await child.waitForLog("superlink.ready", (rec) => rec["event"] === "superlink.ready");
    return {
      child,
      driverAddress: String(ready["driverAddress"]),
      fleetAddress: String(ready["fleetAddress"]),
      metricsAddress: String(ready["metricsAddress"]),
    };
  } catch (err) {
    child.proc.kill("SIGKILL");
    throw err;
  }
}

/** Starts flower-client-app for `ref` (module:attr in `appDir`) as SuperNode `i`; resolves when registered. */
export async function startSuperNodeChild(
  i: number,
  creds: Credentials,
  superlink: SuperLinkChild,
  appDir: string,
  ref: string,
  logDir: string,
  nodeConfig?: string,
  security: Security = "tls+auth",
): Promise<Child> {
  const keys = creds.nodeKeys(i);
  const child = startDaemon(`supernode-${i}`, "flower-client-app", {
    logDir,
    args: [
      ref,
      "--dir",
      appDir,
      "--superlink",
      superlink.fleetAddress,
      ...(security === "plaintext"
        ? ["--insecure"]
        : [
            "--root-certificates",
            creds.caCert,
            ...(security === "tls+auth"
              ? ["--auth-supernode-private-key", keys.privateKeyPath, "--auth-supernode-public-key", keys.publicKeyPath]
              : []),
          ]),
      ...(nodeConfig !== undefined ? ["--node-config", nodeConfig] : []),
    ],
  });
  await child.waitForLog(`SuperNode ${i} ready`, (rec) => rec["event"] === "supernode.ready");
  return child;
}

/** Starts flower-server-app for `ref` against the SuperLink's Driver API. */
export function startServerAppChild(
  creds: Credentials,
  superlink: SuperLinkChild,
  appDir: string,
  ref: string,
  logDir: string,
  security: Security = "tls+auth",
): Child {
  const trust = security === "plaintext" ? ["--insecure"] : ["--root-certificates", creds.caCert];
  return startDaemon("serverapp", "flower-server-app", {
    logDir,
    args: [ref, "--dir", appDir, ...trust, "--superlink", superlink.driverAddress],
  });
}

/** Reads the SuperLink's Prometheus metrics into name{labels} -> value. */
export async function scrapeMetrics(metricsAddress: string): Promise<Map<string, number>> {
  const res = await fetch(`http://${metricsAddress}/metrics`);
  if (!res.ok) throw new Error(`metrics endpoint answered ${res.status}`);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

/** Unix ms of a pino record (`time` is an ISO string with ms). */
export function recordTimeMs(rec: LogRecord): number {
  const t = rec["time"];
  const ms = typeof t === "string" ? Date.parse(t) : typeof t === "number" ? t : NaN;
  if (!Number.isFinite(ms)) throw new Error(`log record without a usable time: ${JSON.stringify(rec)}`);
  return ms;
}
