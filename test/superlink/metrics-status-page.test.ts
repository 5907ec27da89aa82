/**
 * The status page on `/` of the metrics address, in a real headless Chromium: a SuperLink with
 * metrics on port 0 and a SuperNode; the page shows the node online, the run with its round, a
 * FAB id full of markup as plain text (no element made from it, no script run), and the chart
 * gets new points as the page polls /status.json.
 */
import type * as puppeteer from "puppeteer-core";
import { ClientApp } from "../../src/client/client-app";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { silentLogger } from "../../src/core/logger";
import type { DriverClient } from "../../src/proto/flwr/proto/driver";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { type SuperNodeHandle, startSuperNode } from "../../src/supernode/supernode";
import { unaryCall } from "../../src/transport/channel";
import { chromiumSkipReason, launchChromium } from "../helpers/status-page-browser";
import { driverClient, validTaskIns } from "./helpers";

const SKIP_REASON = chromiumSkipReason();
if (SKIP_REASON !== undefined) process.stderr.write(`metrics-status-page.test.ts: ${SKIP_REASON}\n`);
const describeBrowser = SKIP_REASON === undefined ? describe : describe.skip;

const HOSTILE_FAB_ID = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>&amp;`;

describeBrowser(
  `the SuperLink status page in headless Chromium${SKIP_REASON === undefined ? "" : ` — ${SKIP_REASON}`}`,
  () => {
    let link: SuperLinkHandle | undefined;
    let node: SuperNodeHandle | undefined;
    let driver: DriverClient | undefined;
    let browser: puppeteer.Browser | undefined;

    beforeAll(async () => {
      const started = await startSuperLink(
        {
          driverApiAddress: "127.0.0.1:0",
          fleetApiAddress: "127.0.0.1:0",
          database: IN_MEMORY_DATABASE,
          metricsAddress: "127.0.0.1:0",
        },
        { logger: silentLogger() },
      );
      link = started;
      node = await startSuperNode(
        { superlink: started.fleetAddress, app: new ClientApp(), insecure: true, maxBackoffMs: 300 },
        { logger: silentLogger() },
      );
      driver = driverClient(started.driverAddress);
      browser = await launchChromium();
    }, 60_000);

    afterAll(async () => {
      await browser?.close();
      driver?.close();
      await node?.close(1_000);
      await link?.close(0);
    });

    test("shows the node online, the run and its round as text, and a chart that keeps updating", async () => {
      if (link === undefined || node === undefined || driver === undefined || browser === undefined)
        throw new Error("setup failed");
      const { response: run } = await unaryCall(driver.createRun.bind(driver), {
        fabId: HOSTILE_FAB_ID,
        fabVersion: "1.0",
        overrideConfig: new Map(),
      });
      await unaryCall(driver.pushTaskIns.bind(driver), {
        taskInsList: [validTaskIns(run.runId, node.nodeId, { groupId: "3" })],
      });

      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (err) => errors.push(String(err)));
      // Page-side code as strings: this project compiles without the DOM library.
      const inPage = async <T>(expression: string): Promise<T> => (await page.evaluate(expression)) as T;
      const texts = (selector: string): Promise<Array<string | null>> =>
        inPage(`Array.from(document.querySelectorAll(${JSON.stringify(selector)}), (e) => e.textContent)`);
      const chartPoints = (): Promise<number> =>
        inPage(`Number(document.getElementById("chart").getAttribute("data-points"))`);
      const rpcLine = (): Promise<string> => inPage(`document.getElementById("rpc-line").getAttribute("points")`);

      const response = await page.goto(`http://${String(link.metricsAddress)}/`, { waitUntil: "load" });
      expect(response?.status()).toBe(200);
      expect(response?.headers()["content-security-policy"]).toContain("default-src 'none'");

      await page.waitForFunction(`document.getElementById("nodes-online").textContent === "1"`, { timeout: 15_000 });
      expect(await texts("#nodes tr td:first-child")).toEqual([node.nodeId.toString()]);

      await page.waitForFunction(`document.querySelectorAll("#runs tr").length === 1`, { timeout: 15_000 });
      expect(await texts("#runs tr td")).toEqual([
        run.runId.toString(),
        `${HOSTILE_FAB_ID} 1.0`,
        "3",
        "1",
        expect.any(String),
      ]);
      expect(await inPage<number>(`document.querySelectorAll("#runs img, #runs script").length`)).toBe(0);
      expect(await inPage<string>("typeof window.__pwned")).toBe("undefined");

      // The chart: at least two samples, then more, with the line redrawn.
      await page.waitForFunction(`Number(document.getElementById("chart").getAttribute("data-points")) >= 2`, {
        timeout: 15_000,
      });
      const first = { count: await chartPoints(), line: await rpcLine() };
      await page.waitForFunction(
        `Number(document.getElementById("chart").getAttribute("data-points")) > ${first.count}`,
        { timeout: 15_000 },
      );
      const second = { count: await chartPoints(), line: await rpcLine() };
      expect(second.count).toBeGreaterThan(first.count);
      expect(second.line).not.toBe(first.line);
      expect(second.line.split(" ")).toHaveLength(second.count);
      expect(errors).toEqual([]);
      await page.close();
    }, 60_000);
  },
);
