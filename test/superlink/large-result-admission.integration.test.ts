/**
 * The Fleet API's budget of large results in memory (src/transport/receive-admission.ts), over
 * real gRPC + TLS: uploads of large PushTaskRes wait (their streams paused) while earlier large
 * results are still in memory, proceed when those are pulled and freed, after the longest wait
 * when nothing frees, and at once when a held or admitted call ends; with node authentication,
 * only calls that proved their key wait. Observed through the SuperLink's admission counters,
 * never through timing.
 */
import * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { Allowlist } from "../../src/auth/allowlist";
import type { SuperNodeAuth } from "../../src/auth/client-auth";
import { loadKeyPairFiles } from "../../src/auth/keys";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { type SuperLinkHandle as RunningSuperLink, startSuperLink } from "../../src/superlink/superlink";
import type { FleetReceiveLimits } from "../../src/superlink/fleet/fleet-receive";
import type { FleetClient } from "../../src/proto/flwr/proto/fleet";
import { unaryCall } from "../../src/transport/channel";
import { readServerTlsFiles } from "../../src/transport/tls";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import {
  driverClient,
  fleetClient,
  memoryLogger,
  registerAuthenticated,
  statusOf,
  until,
  validTaskIns,
  validTaskRes,
} from "./helpers";
import { grpcFrameHeader, grpcRequestHeaders } from "../helpers/raw-grpc";

const MiB = 1024 * 1024;
/** Above the 16 MiB from which results are admitted by the budget. */
const RESULT_BYTES = 17 * MiB;
/** Room for one such result, not two. */
const BUDGET = 20 * MiB;

let fx: Fixtures;
let ca: Buffer;
beforeAll(() => {
  fx = generateFixtures(2);
  ca = fx.read(fx.caCert);
});
afterAll(() => fx.cleanup());

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function startLink(limits: FleetReceiveLimits, nodeAuthentication = false): Promise<RunningSuperLink> {
  const tls = readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey });
  const link = await startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      tls,
      ...(nodeAuthentication
        ? {
            auth: {
              allowlist: Allowlist.fromCsvFile(fx.allowlistCsv),
              superlinkKeys: loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey),
              watchAllowlist: false,
            },
          }
        : {}),
      longPollMs: 30_000,
      fleetReceiveLimits: limits,
    },
    { logger: memoryLogger("warn").logger },
  );
  closers.push(() => link.close());
  return link;
}

interface Round {
  runId: bigint;
  nodeIds: bigint[];
  taskInsIds: string[];
  fleets: FleetClient[];
  driver: ReturnType<typeof driverClient>;
}

/** A run with `nodes` nodes (one Fleet connection each) and one TaskIns for each. */
async function round(link: RunningSuperLink, nodes: number): Promise<Round> {
  const driver = driverClient(link.driverAddress, ca);
  closers.push(() => driver.close());
  const runId = (
    await unaryCall(driver.createRun.bind(driver), { fabId: "f", fabVersion: "1", overrideConfig: new Map() })
  ).response.runId;
  const fleets: FleetClient[] = [];
  const nodeIds: bigint[] = [];
  for (let i = 0; i < nodes; i++) {
    const fleet = fleetClient(link.fleetAddress, ca);
    closers.push(() => fleet.close());
    fleets.push(fleet);
    nodeIds.push((await unaryCall(fleet.createNode.bind(fleet), { pingInterval: 30 })).response.node!.nodeId);
  }
  const { taskIds } = (
    await unaryCall(driver.pushTaskIns.bind(driver), {
      taskInsList: nodeIds.map((nodeId) => validTaskIns(runId, nodeId)),
    })
  ).response;
  return { runId, nodeIds, taskInsIds: taskIds, fleets, driver };
}

/** Node `i`'s result: one tensor of RESULT_BYTES filled with `i + 1`. */
function largeResult(r: Round, i: number): ReturnType<typeof validTaskRes> {
  const res = validTaskRes(r.runId, r.nodeIds[i]!, r.taskInsIds[i]!);
  res.task!.recordset = {
    parameters: new Map([
      [
        "w",
        {
          dataKeys: ["t"],
          dataValues: [
            { dtype: "uint8", shape: [RESULT_BYTES], stype: "numpy.ndarray", data: Buffer.alloc(RESULT_BYTES, i + 1) },
          ],
        },
      ],
    ]),
    metrics: new Map(),
    configs: new Map(),
  };
  return res;
}

function push(r: Round, i: number): Promise<unknown> {
  const fleet = r.fleets[i]!;
  return unaryCall(fleet.pushTaskRes.bind(fleet), { taskResList: [largeResult(r, i)] });
}

/** Pulls (long-polling) until every TaskIns has its result; checks each result's bytes. */
async function pullAll(r: Round): Promise<void> {
  const left = new Map(r.taskInsIds.map((id, i) => [id, i]));
  for (let attempt = 0; left.size > 0 && attempt < 100; attempt++) {
    const { response } = await unaryCall(r.driver.pullTaskRes.bind(r.driver), {
      node: undefined,
      taskIds: [...left.keys()],
    });
    for (const res of response.taskResList) {
      const i = left.get(res.task!.ancestry[0]!)!;
      left.delete(res.task!.ancestry[0]!);
      const data = res.task!.recordset!.parameters.get("w")!.dataValues[0]!.data;
      expect(data.length).toBe(RESULT_BYTES);
      expect(data.every((b) => b === i + 1)).toBe(true);
    }
  }
  expect(left.size).toBe(0);
}

test("concurrent large uploads are read one budget at a time, and every result arrives intact", async () => {
  const link = await startLink({ largeResultBudgetBytes: BUDGET, largeResultMaxWaitMs: 60_000 });
  const r = await round(link, 4);
  await Promise.all([...r.nodeIds.map((_, i) => push(r, i)), pullAll(r)]);
  const stats = link.largeResultAdmission()!;
  expect(stats.admitted).toBe(4);
  // Uploads that start together wait for each other: never two results in memory at once.
  expect(stats.waited).toBeGreaterThan(0);
  expect(stats.admittedAfterMaxWait).toBe(0);
  expect(stats.peakHeldBytes).toBeLessThanOrEqual(BUDGET);
}, 60_000);

test("a held upload proceeds after the longest wait when nothing frees the budget", async () => {
  const link = await startLink({ largeResultBudgetBytes: BUDGET, largeResultMaxWaitMs: 300 });
  const r = await round(link, 2);
  await push(r, 0); // stored, and nobody pulls it
  await push(r, 1);
  expect(await link.state.numTaskRes()).toBe(2);
  expect(link.largeResultAdmission()).toMatchObject({ admitted: 2, waited: 1, admittedAfterMaxWait: 1, waiting: 0 });
  await pullAll(r);
}, 60_000);

test("an upload that ends gives its budget back, and small calls on a held connection go on", async () => {
  const link = await startLink({ largeResultBudgetBytes: BUDGET, largeResultMaxWaitMs: 60_000 });
  const r = await round(link, 2);
  // Node 0's upload declares a large result, sends 1 MiB of it and stalls: it holds the budget.
  const session = http2.connect(`https://localhost:${link.fleetAddress.split(":").pop()}`, { ca });
  session.on("error", () => undefined);
  closers.push(() => session.destroy());
  const stalled = session.request(grpcRequestHeaders("/flwr.proto.Fleet/PushTaskRes"));
  stalled.on("error", () => undefined);
  stalled.write(Buffer.concat([grpcFrameHeader(RESULT_BYTES + 1000), Buffer.alloc(MiB)]));
  await until(() => link.largeResultAdmission()!.admitted === 1, "the stalled upload admitted");

  // Node 1's upload waits behind it, while its connection still serves small calls.
  const held = push(r, 1);
  await until(() => link.largeResultAdmission()!.waiting === 1, "the second upload held");
  const fleet = r.fleets[1]!;
  const { response } = await unaryCall(fleet.pullTaskIns.bind(fleet), {
    node: { nodeId: r.nodeIds[1]!, anonymous: false },
    taskIds: [],
  });
  expect(response.taskInsList).toHaveLength(1);
  expect(link.largeResultAdmission()!.waiting).toBe(1);

  // The stalled upload is reset: its claim is released and the held one is read.
  stalled.close(http2.constants.NGHTTP2_CANCEL);
  await held;
  expect(await link.state.numTaskRes()).toBe(1);
  expect(link.largeResultAdmission()).toMatchObject({ admitted: 2, waited: 1, admittedAfterMaxWait: 0 });
}, 60_000);

test("with node authentication, only uploads on connections that proved their key wait for the budget", async () => {
  const link = await startLink({ largeResultBudgetBytes: BUDGET, largeResultMaxWaitMs: 300 }, true);
  const driver = driverClient(link.driverAddress, ca);
  closers.push(() => driver.close());
  const runId = (
    await unaryCall(driver.createRun.bind(driver), { fabId: "f", fabVersion: "1", overrideConfig: new Map() })
  ).response.runId;
  const nodes: Array<{ fleet: FleetClient; auth: SuperNodeAuth; nodeId: bigint }> = [];
  for (const i of [0, 1]) {
    const fleet = fleetClient(link.fleetAddress, ca);
    closers.push(() => fleet.close());
    // Its Ping is the first MAC-checked call: the connection has proved its key.
    const { auth, nodeId } = await registerAuthenticated(fleet, fx.clientPrivateKeys[i]!, fx.clientPublicKeys[i]!);
    nodes.push({ fleet, auth, nodeId });
  }
  const { taskIds } = (
    await unaryCall(driver.pushTaskIns.bind(driver), {
      taskInsList: nodes.map((n) => validTaskIns(runId, n.nodeId)),
    })
  ).response;
  const r: Round = { runId, nodeIds: nodes.map((n) => n.nodeId), taskInsIds: taskIds, fleets: [], driver };
  const signedPush = (i: number): Promise<unknown> => {
    const { fleet, auth } = nodes[i]!;
    const request = { taskResList: [largeResult(r, i)] };
    return unaryCall(fleet.pushTaskRes.bind(fleet), request, auth.metadataFor("PushTaskResRequest", request));
  };

  // Node 0's result is stored and nobody pulls it: it holds the budget.
  await signedPush(0);
  expect(link.largeResultAdmission()).toMatchObject({ admitted: 1, waited: 0 });

  // A new connection naming node 1's key, with a MAC over other bytes, proved nothing: its large
  // upload is read at once (under the unauthenticated budgets) and refused, without waiting.
  const stranger = fleetClient(link.fleetAddress, ca);
  closers.push(() => stranger.close());
  const forged = { taskResList: [largeResult(r, 1)] };
  const metadata: grpc.Metadata = nodes[1]!.auth.metadataFor("PushTaskResRequest", { taskResList: [] });
  const { code } = await statusOf(unaryCall(stranger.pushTaskRes.bind(stranger), forged, metadata));
  expect(code).toBe(grpc.status.UNAUTHENTICATED);
  expect(link.largeResultAdmission()).toMatchObject({ admitted: 1, waited: 0, waiting: 0 });

  // Node 1's own upload, on its proven connection, waits for the budget (here: the longest wait).
  await signedPush(1);
  expect(link.largeResultAdmission()).toMatchObject({ admitted: 2, waited: 1, admittedAfterMaxWait: 1 });
  await pullAll(r);
}, 60_000);
