/**
 * The browser SuperNode in real headless Chromium (test/helpers/chromium.ts): a SuperLink from
 * dist/ with the REST Fleet API over TLS, node authentication and `--rest-serve-browser-client`
 * serves the page; the page loads an allowlisted OpenSSH key pair from files and joins a FedAvg
 * run beside a Node SuperNode (flower-client-app --rest); the ServerApp's History shows both.
 * The page recomputes the authentication vectors with Chromium's WebCrypto, and a key generated
 * in a second page (not allowlisted) is refused with the page's message.
 *
 * The CA is trusted by pinning the server certificate's key (--ignore-certificate-errors-spki-list),
 * and the test checks that the page really came over https with that certificate.
 * Skips, saying so, when Chromium is absent.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "puppeteer-core";
import { type Fixtures, REPO_ROOT, generateFixtures } from "../helpers/fixtures";
import { type LaunchedChromium, chromiumPath, launchChromium } from "../helpers/chromium";
import { BROWSER_BUNDLE, requireDist } from "../helpers/dist";
import { Peer } from "../helpers/peer-process";
import { WEB_VECTOR_INPUTS, expectWebVectors } from "../auth/web-vectors";
import type { AuthVectorOutputs } from "../../src/auth/web-vector-check";

jest.setTimeout(240_000);

const chromium = chromiumPath();
const describeWithChromium = chromium !== undefined ? describe : describe.skip;
if (chromium === undefined) {
  console.log("test/browser/browser-supernode: skipped, no Chromium (apt-get install chromium, or set FLWR_CHROMIUM)");
}

/** Tiny data and the CPU backend keep the run short; the page uses webgl by default. */
const PAGE_QUERY = "?partition-id=1&num-partitions=2&train-count=16&test-count=8&backend=cpu";
const NODE_CONFIG = "partition-id=0,num-partitions=2,train-count=16,test-count=8";

let fx: Fixtures;
let work: string;
let launched: LaunchedChromium | undefined;
const peers: Peer[] = [];

const start = (name: string, bin: string, args: string[], env: NodeJS.ProcessEnv = process.env): Peer => {
  const p = new Peer(name, process.execPath, [join(REPO_ROOT, "bin", bin), ...args], env, work);
  peers.push(p);
  return p;
};

/** The little of the DOM these callbacks use (they run in the page; the test compiles without DOM types). */
interface PageElement {
  dataset: Record<string, string | undefined>;
  value: string;
  textContent: string | null;
  cells: ArrayLike<PageElement>;
}
interface PageGlobals {
  document: { getElementById(id: string): PageElement };
  location: { protocol: string };
  isSecureContext: boolean;
}

/** The page's `data-state` word, or its text content / value of an element. */
const stateOf = (page: Page): Promise<string | undefined> =>
  page.$eval("#state", (el) => (el as unknown as PageElement).dataset["state"]);
const textOf = (page: Page, selector: string): Promise<string> =>
  page.$eval(selector, (el) => (el as unknown as PageElement).textContent ?? "");
const valueOf = (page: Page, selector: string): Promise<string> =>
  page.$eval(selector, (el) => (el as unknown as PageElement).value);

async function waitForState(page: Page, wanted: RegExp, timeoutMs: number): Promise<string> {
  await page.waitForFunction(
    (source: string) =>
      new RegExp(source).test(
        (globalThis as unknown as PageGlobals).document.getElementById("state").dataset["state"] ?? "",
      ),
    { timeout: timeoutMs, polling: 100 },
    wanted.source,
  );
  return (await stateOf(page)) ?? "";
}

async function waitForValue(page: Page, id: string): Promise<string> {
  await page.waitForFunction(
    (i: string) => (globalThis as unknown as PageGlobals).document.getElementById(i).value !== "",
    { timeout: 10_000 },
    id,
  );
  return valueOf(page, `#${id}`);
}

beforeAll(() => {
  if (chromium === undefined) return;
  requireDist();
  if (!existsSync(BROWSER_BUNDLE)) throw new Error("dist/browser/ is missing: run `npm run build` first");
  fx = generateFixtures(2);
  work = mkdtempSync(join(tmpdir(), "flwr-ts-browser-"));
});

afterAll(async () => {
  await launched?.close();
  await Promise.all(peers.filter((p) => !/superlink/.test(p.name)).map((p) => p.stop()));
  await Promise.all(peers.map((p) => p.stop()));
  fx?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describeWithChromium("browser SuperNode in Chromium", () => {
  test("joins a FedAvg run over https with node authentication beside a Node SuperNode; a key not allowlisted is refused", async () => {
    const superlink = start("superlink", "flower-superlink", [
      "--fleet-api-type",
      "rest",
      "--rest-serve-browser-client",
      "--driver-api-address",
      "127.0.0.1:0",
      "--fleet-api-address",
      "127.0.0.1:0",
      "--ssl-ca-certfile",
      fx.caCert,
      "--ssl-certfile",
      fx.serverCert,
      "--ssl-keyfile",
      fx.serverKey,
      "--auth-list-public-keys",
      fx.allowlistCsv,
      "--auth-superlink-private-key",
      fx.superlinkPrivateKey,
      "--auth-superlink-public-key",
      fx.superlinkPublicKey,
    ]);
    const ready = await superlink.waitFor(/\{[^\n]*"event":"superlink\.ready"[^\n]*\}/, 30_000);
    const { driverAddress, fleetAddress, browserClientUrl } = JSON.parse(ready[0]) as Record<string, string>;
    expect(browserClientUrl).toBe(`https://${fleetAddress}/`);

    const nodeSuperNode = start("node-supernode", "flower-client-app", [
      "client:app",
      "--dir",
      REPO_ROOT,
      "--rest",
      "--superlink",
      `https://${fleetAddress}`,
      "--root-certificates",
      fx.caCert,
      "--auth-supernode-private-key",
      fx.clientPrivateKeys[0]!,
      "--auth-supernode-public-key",
      fx.clientPublicKeys[0]!,
      "--node-config",
      NODE_CONFIG,
    ]);
    const launching = launchChromium({ trustCertPem: fx.serverCert });
    await nodeSuperNode.waitFor(/"event":"supernode\.ready"/, 60_000);
    launched = await launching;

    // The page, over https with the SuperLink's certificate, in a secure context.
    const page = await launched.browser.newPage();
    page.on("pageerror", (err) => process.stderr.write(`page error: ${String(err)}\n`));
    const response = await page.goto(`${browserClientUrl}${PAGE_QUERY}`, { waitUntil: "load" });
    expect(response?.status()).toBe(200);
    expect(response?.url().startsWith("https://")).toBe(true);
    expect(response?.securityDetails()?.subjectName()).toBeTruthy();
    expect(response?.headers()["content-security-policy"]).toMatch(/script-src 'self'/);
    expect(
      await page.evaluate(() => [
        (globalThis as unknown as PageGlobals).location.protocol,
        (globalThis as unknown as PageGlobals).isSecureContext,
      ]),
    ).toEqual(["https:", true]);

    // Chromium's WebCrypto reproduces the authentication vectors.
    const vectors = await page.evaluate(
      (inputs) =>
        (
          globalThis as unknown as { flwrBrowserSelfTest: { computeWebAuthVectors(i: unknown): Promise<unknown> } }
        ).flwrBrowserSelfTest.computeWebAuthVectors(inputs),
      WEB_VECTOR_INPUTS as unknown as Record<string, string>,
    );
    expectWebVectors(vectors as AuthVectorOutputs);

    // Load the allowlisted key pair from its OpenSSH files; the page shows the public-key line.
    const privateInput = await page.$("#private-key-file");
    const publicInput = await page.$("#public-key-file");
    await privateInput!.uploadFile(fx.clientPrivateKeys[1]!);
    await publicInput!.uploadFile(fx.clientPublicKeys[1]!);
    await page.click("#load-key");
    const shownLine = await waitForValue(page, "public-line");
    expect(shownLine.split(" ").slice(0, 2)).toEqual(
      readFileSync(fx.clientPublicKeys[1]!, "utf8").trim().split(" ").slice(0, 2),
    );

    await page.click("#start");
    expect(await waitForState(page, /^(connected|refused|failed)$/, 60_000)).toBe("connected");

    const serverApp = start("server-app", "flower-server-app", [
      "server:app",
      "--dir",
      join(REPO_ROOT, "test", "browser", "app"),
      "--root-certificates",
      fx.caCert,
      "--superlink",
      String(driverAddress),
    ]);
    const code = await serverApp.waitForExit(150_000);
    if (code !== 0) throw new Error(`ServerApp exit ${code}\n${peers.map((p) => p.tail()).join("\n")}`);
    const summary = /\{[^\n]*"event":"serverapp\.summary"[^\n]*\}/.exec(serverApp.output);
    const history = (JSON.parse(summary![0]) as { history: Record<string, Record<string, unknown>> }).history;
    if (process.env["FLWR_DEBUG_BROWSER"])
      process.stderr.write(`${JSON.stringify(history)}\n${await textOf(page, "#log")}\n${serverApp.output}\n`);
    expect(history["metricsDistributedFit"]!["runtimes"]).toEqual([[1, "browser,node"]]);
    expect(history["metricsDistributedFit"]!["clients"]).toEqual([[1, 2]]);
    expect(history["metricsDistributed"]!["runtimes"]).toEqual([[1, "browser,node"]]);

    // The page showed the round's training and evaluation.
    const row = await page.$$eval("#rounds tbody tr", (rows) =>
      rows.map((r) => Array.from((r as unknown as PageElement).cells, (c) => c.textContent)),
    );
    expect(row).toHaveLength(1);
    expect(row[0]![0]).toBe("1");
    for (const cell of row[0]!.slice(1)) expect(cell).toMatch(/^\d+\.\d{4}$/);
    expect(await textOf(page, "#data-label")).toMatch(/synthetic.*not real CIFAR-10/);
    expect(await textOf(page, "#backend")).toMatch(/^cpu/);

    // A key generated in a fresh profile is not in the allowlist: refused, with the page's message.
    const context = await launched.browser.createBrowserContext();
    const stranger = await context.newPage();
    await stranger.goto(`${browserClientUrl}${PAGE_QUERY}`, { waitUntil: "load" });
    await stranger.click("#generate-key");
    expect(await waitForValue(stranger, "public-line")).toMatch(/^ecdsa-sha2-nistp384 AAAA/);
    await stranger.click("#start");
    expect(await waitForState(stranger, /^(connected|refused|failed)$/, 60_000)).toBe("refused");
    const message = await textOf(stranger, "#error");
    expect(message).toMatch(/refused this node's key/);
    expect(message).toMatch(/keys\/client_public_keys\.csv/);
    expect(superlink.output).toMatch(/"event":"fleet\.auth-denied"/);
    await context.close();

    // Leaving sends DeleteNode.
    await page.click("#stop");
    expect(await waitForState(page, /^stopped$/, 20_000)).toBe("stopped");
  });
});
