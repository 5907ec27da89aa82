/**
 * `npm run demo:browser`: the deployment of `npm run demo` with a browser SuperNode as the second
 * node — a SuperLink with TLS, node authentication and the REST Fleet API serving the browser
 * SuperNode page (`--rest-serve-browser-client`), one Node SuperNode (flower-client-app --rest),
 * and the example ServerApp, which waits for both nodes (2 clients) before round 1. The demo
 * prints the page's URL and what the browser needs (trusting the demo CA, a key the allowlist
 * knows); docs/browser.md has the details.
 */
import { X509Certificate, createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SYNTHETIC_SOURCE } from "../example/synthetic-data";
import {
  type Child,
  DEMO_SUPERLINK_ARGS,
  demoServerAppArgs,
  ensureCredentials,
  startChild,
  stopAll,
  waitFor,
  demoSuperNodeArgs,
} from "./demo";

const REPO_ROOT = resolve(__dirname, "..", "..");

function say(line: string): void {
  process.stderr.write(`[demo:browser] ${line}\n`);
}

/** base64(SHA-256(SPKI)) of a certificate: what Chromium's --ignore-certificate-errors-spki-list takes. */
export function spkiPin(certPath: string): string {
  const spki = new X509Certificate(readFileSync(certPath)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/** What a person needs to open the page, given the served URL. */
export function browserInstructions(url: string, root = REPO_ROOT): string[] {
  const pin = spkiPin(join(root, "certificates", "server.pem"));
  return [
    `Browser SuperNode page: ${url}`,
    "  1. Trust the demo's certificate: import certificates/ca.crt as an authority in the browser, or start Chromium with",
    `       chromium --user-data-dir=$(mktemp -d) --ignore-certificate-errors-spki-list=${pin} ${url}`,
    "  2. Give the page a key the SuperLink knows: load keys/client_credentials_2 and keys/client_credentials_2.pub",
    '     with "Use these files", or generate a key in the page and append the line it shows to keys/client_public_keys.csv',
    "     (the SuperLink reloads the file).",
    '  3. Press "Join the SuperLink". The ServerApp starts round 1 once both SuperNodes are connected.',
    `  Data: ${SYNTHETIC_SOURCE}; the page trains partition 1 of 2, the Node SuperNode partition 0.`,
  ];
}

export async function main(): Promise<number> {
  const children: Child[] = [];
  const stop = { interrupted: false };
  const onSignal = (): void => {
    stop.interrupted = true;
    say("interrupted: stopping all processes");
    void stopAll(children).then(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    ensureCredentials();
    let onReady: ((rec: Record<string, unknown>) => void) | undefined;
    const superlink = startChild(
      "superlink",
      "flower-superlink",
      [...DEMO_SUPERLINK_ARGS, "--fleet-api-type", "rest", "--rest-serve-browser-client"],
      { onLog: (rec) => onReady?.(rec) },
    );
    children.push(superlink);
    const ready = await waitFor<Record<string, unknown>>("SuperLink", superlink, (res) => {
      onReady = (rec) => {
        if (rec["event"] === "superlink.ready") res(rec);
      };
    });
    const fleet = String(ready["fleetAddress"]);
    const driver = String(ready["driverAddress"]);
    const url = String(ready["browserClientUrl"]);

    let onNodeLog: ((rec: Record<string, unknown>) => void) | undefined;
    const node = startChild("node-1", "flower-client-app", [...demoSuperNodeArgs(`https://${fleet}`, 1, 2), "--rest"], {
      onLog: (rec) => onNodeLog?.(rec),
    });
    children.push(node);
    await waitFor("SuperNode 1", node, (res) => {
      onNodeLog = (rec) => {
        if (rec["event"] === "supernode.ready") res(rec);
      };
    });
    const serverApp = startChild("serverapp", "flower-server-app", demoServerAppArgs(driver), { stdout: "inherit" });
    children.push(serverApp);
    for (const line of browserInstructions(url)) say(line);
    const code = await Promise.race([
      serverApp.exited,
      ...children
        .filter((c) => c !== serverApp)
        .map((c) => c.exited.then((x) => Promise.reject(new Error(`${c.name} exited unexpectedly with code ${x}`)))),
    ]);
    say(
      code === 0
        ? "ServerApp finished; stopping the SuperNode and SuperLink (close the page)"
        : `ServerApp failed with exit code ${code}`,
    );
    await stopAll(children);
    return code;
  } catch (err) {
    if (!stop.interrupted) say(`failed: ${err instanceof Error ? err.message : String(err)}`);
    await stopAll(children);
    return 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

if (require.main === module) void main().then((code) => process.exit(code));
