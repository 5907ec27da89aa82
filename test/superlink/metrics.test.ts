/**
 * src/superlink/metrics.ts: one prom-client Registry per SuperLink (two in one process keep
 * their counts apart), RPC latency histograms by method and transport (gRPC and REST, from real
 * calls), the default process metrics, and the routes of the metrics address (/metrics,
 * /status.json, / with its Content-Security-Policy, 404 and 405 elsewhere).
 */
import * as grpc from "@grpc/grpc-js";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { silentLogger } from "../../src/core/logger";
import { CreateNodeRequest } from "../../src/proto/flwr/proto/fleet";
import { STATUS_RUNS_SHOWN, SuperLinkMetrics } from "../../src/superlink/metrics";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { unaryCall } from "../../src/transport/channel";
import { driverClient } from "./helpers";

const links: SuperLinkHandle[] = [];
afterEach(async () => {
  for (const link of links.splice(0)) await link.close(0);
});

async function superLink(fleetApiType: "grpc-rere" | "rest" = "grpc-rere"): Promise<SuperLinkHandle> {
  const link = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      metricsAddress: "127.0.0.1:0",
      fleetApiType,
    },
    { logger: silentLogger() },
  );
  links.push(link);
  return link;
}

const scrape = async (link: SuperLinkHandle, path = "/metrics"): Promise<Response> =>
  fetch(`http://${String(link.metricsAddress)}${path}`);

test("two SuperLinks in one process keep their metrics apart; latency histograms per method, default process metrics", async () => {
  const [a, b] = [await superLink(), await superLink()];
  const driver = driverClient(a.driverAddress);
  try {
    await unaryCall(driver.createRun.bind(driver), { fabId: "f", fabVersion: "1", overrideConfig: new Map() });
    await unaryCall(driver.createRun.bind(driver), { fabId: "f", fabVersion: "1", overrideConfig: new Map() });
  } finally {
    driver.close();
  }
  const textA = await (await scrape(a)).text();
  const textB = await (await scrape(b)).text();
  expect(textA).toContain('flwr_superlink_rpcs_total{service="Driver",method="CreateRun",code="OK"} 2');
  expect(textA).toMatch(/^flwr_superlink_runs_created_total 2$/m);
  expect(textB).not.toContain('method="CreateRun"');
  expect(textB).toMatch(/^flwr_superlink_runs_created_total 0$/m);
  expect(textA).toMatch(
    /^flwr_superlink_rpc_duration_seconds_count\{service="Driver",method="CreateRun",transport="grpc"\} 2$/m,
  );
  expect(textA).toMatch(
    /^flwr_superlink_rpc_duration_seconds_bucket\{le="60",service="Driver",method="CreateRun",transport="grpc"\} 2$/m,
  );
  expect(textA).toMatch(/^# TYPE flwr_superlink_rpc_duration_seconds histogram$/m);
  for (const name of [
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "nodejs_heap_size_used_bytes",
    "nodejs_eventloop_lag_seconds",
  ]) {
    expect(textA).toMatch(new RegExp(`^${name} \\d`, "m"));
  }
});

test('REST Fleet calls are timed under transport="rest"', async () => {
  const link = await superLink("rest");
  const body = CreateNodeRequest.encode({ pingInterval: 30 }).finish();
  const res = await fetch(`http://${link.fleetAddress}/api/v0/fleet/create-node`, {
    method: "POST",
    headers: { "content-type": "application/protobuf", accept: "application/protobuf" },
    body: Buffer.from(body),
  });
  expect(res.status).toBe(200);
  const text = await (await scrape(link)).text();
  expect(text).toMatch(
    /^flwr_superlink_rpc_duration_seconds_count\{service="Fleet",method="CreateNode",transport="rest"\} 1$/m,
  );
  expect(text).toContain('flwr_superlink_rpcs_total{service="Fleet",method="CreateNode",code="OK"} 1');
});

test("the metrics address serves the status page, /status.json, and 404/405 elsewhere", async () => {
  const link = await superLink();
  const page = await scrape(link, "/");
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
  const csp = page.headers.get("content-security-policy") ?? "";
  expect(csp).toContain("default-src 'none'");
  expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
  const html = await page.text();
  expect(html).toContain('<svg id="chart"');
  expect(html).not.toMatch(/(src|href)="(https?:)?\/\//); // nothing from elsewhere
  const status = (await (await scrape(link, "/status.json")).json()) as Record<string, unknown>;
  expect(status).toMatchObject({ nodesOnline: 0, runsCreated: 0, taskInsStored: 0, rpcsTotal: 0, runs: [], nodes: [] });
  expect((await scrape(link, "/other")).status).toBe(404);
  expect((await fetch(`http://${String(link.metricsAddress)}/metrics`, { method: "POST" })).status).toBe(405);
});

test("the status snapshot keeps the latest runs with their round and task counts", async () => {
  let now = 1_000;
  const metrics = new SuperLinkMetrics({ now: () => now });
  const ok = grpc.status.OK;
  for (let i = 1; i <= STATUS_RUNS_SHOWN + 5; i++) {
    metrics.recordCall(
      "/flwr.proto.Driver/CreateRun",
      ok,
      { fabId: `fab-${i}`, fabVersion: "1" },
      { runId: BigInt(i) },
    );
  }
  metrics.recordCall(
    "/flwr.proto.Driver/PushTaskIns",
    ok,
    {
      taskInsList: [
        { runId: 7n, groupId: "2" },
        { runId: 7n, groupId: "3" },
      ],
    },
    {},
  );
  metrics.recordCall("/flwr.proto.Fleet/PushTaskRes", ok, { taskResList: [{ runId: 7n, groupId: "3" }] }, {});
  metrics.recordCall("/flwr.proto.Fleet/CreateNode", ok, { pingInterval: 30 }, { node: { nodeId: -5n } });
  now += 10_000;
  const status = await metrics.status();
  expect(status.runsCreated).toBe(STATUS_RUNS_SHOWN + 5);
  expect(status.runs).toHaveLength(STATUS_RUNS_SHOWN);
  expect(status.runs[0]?.runId).toBe(String(STATUS_RUNS_SHOWN + 5)); // newest first
  expect(status.runs.find((r) => r.runId === "7")).toMatchObject({
    fabId: "fab-7",
    lastGroupId: "3",
    taskInsPushed: 2,
    taskResPushed: 1,
  });
  expect(status).toMatchObject({
    nodesOnline: 1,
    nodes: [{ nodeId: "-5", onlineUntil: 31_000 }],
    taskInsPushedTotal: 2,
    taskResPushedTotal: 1,
  });
  expect(status.rpcsTotal).toBe(STATUS_RUNS_SHOWN + 5 + 3);
});
