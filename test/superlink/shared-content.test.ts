/**
 * PushSharedTaskIns (src/superlink/driver/shared-content.ts) over the in-memory state: content is
 * hashed by the SuperLink, stored once per run, referenced by digest only within its run, and
 * malformed or unknown references store nothing.
 */
import { createHash } from "node:crypto";
import { MalformedMessageError, ResourceExhaustedError, UnknownContentError } from "../../src/core/errors";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { RecordSet } from "../../src/proto/flwr/proto/recordset";
import type { TaskIns } from "../../src/proto/flwr/proto/task";
import type { SharedTaskIns } from "../../src/proto/flwr_ts/proto/shared_content";
import { createState } from "../../src/state/state-factory";
import type { State } from "../../src/state/state";
import { pushSharedTaskIns } from "../../src/superlink/driver/shared-content";
import { validTaskIns } from "./helpers";

const encoded = (fill: number, size = 4096): Buffer =>
  Buffer.from(
    RecordSet.encode({
      parameters: new Map([
        [
          "p",
          {
            dataKeys: ["w"],
            dataValues: [{ dtype: "u8", shape: [size], stype: "raw", data: Buffer.alloc(size, fill) }],
          },
        ],
      ]),
      metrics: new Map(),
      configs: new Map(),
    }).finish(),
  );

/** A TaskIns for node `nodeId` without its recordset, as PushSharedTaskIns carries it. */
function envelope(runId: bigint, nodeId: bigint): TaskIns {
  const t = validTaskIns(runId, nodeId);
  t.task!.recordset = undefined;
  return t;
}
const byIndex = (taskIns: TaskIns, contentIndex: number): SharedTaskIns => ({
  taskIns,
  contentIndex,
  contentDigest: undefined,
});
const byDigest = (taskIns: TaskIns, contentDigest: Buffer): SharedTaskIns => ({
  taskIns,
  contentIndex: undefined,
  contentDigest,
});

describe("PushSharedTaskIns", () => {
  let state: State;
  let runId: bigint;
  beforeEach(async () => {
    state = await createState(IN_MEMORY_DATABASE, { limits: { maxRunBytes: 200_000 } });
    runId = await state.createRun("f", "v", new Map());
  });
  afterEach(async () => await state.close());

  test("an empty request is the support probe: answered empty, nothing stored", async () => {
    expect(await pushSharedTaskIns({ contents: [], taskInsList: [] }, state)).toEqual({
      taskIds: [],
      contentDigests: [],
    });
  });

  test("stores one content for many TaskIns; the SuperLink's own SHA-256 is the answer and the key", async () => {
    const content = encoded(1);
    const res = await pushSharedTaskIns(
      { contents: [content], taskInsList: [1n, 2n, 3n].map((n) => byIndex(envelope(runId, n), 0)) },
      state,
    );
    expect(res.taskIds).toHaveLength(3);
    expect(res.contentDigests).toEqual([createHash("sha256").update(content).digest()]);
    expect(await state.numSharedContents()).toBe(1);
    const [pulled] = await state.getTaskIns(2n, 1);
    expect(Buffer.from(RecordSet.encode(pulled!.task!.recordset!).finish())).toEqual(content);
    // A later request refers to it by the acknowledged digest, without sending it again.
    const later = await pushSharedTaskIns(
      { contents: [], taskInsList: [byDigest(envelope(runId, 4n), res.contentDigests[0]!)] },
      state,
    );
    expect(later.taskIds[0]).not.toBe("");
    expect(await state.numSharedContents()).toBe(1);
  });

  test("a digest the run does not hold is UnknownContentError, even one another run holds", async () => {
    const otherRun = await state.createRun("f", "v", new Map());
    const { contentDigests } = await pushSharedTaskIns(
      { contents: [encoded(2)], taskInsList: [byIndex(envelope(otherRun, 1n), 0)] },
      state,
    );
    await expect(
      pushSharedTaskIns({ contents: [], taskInsList: [byDigest(envelope(runId, 1n), contentDigests[0]!)] }, state),
    ).rejects.toThrow(UnknownContentError);
    await expect(
      pushSharedTaskIns(
        { contents: [], taskInsList: [byDigest(envelope(runId, 1n), createHash("sha256").update("x").digest())] },
        state,
      ),
    ).rejects.toThrow(UnknownContentError);
    expect(await state.numTaskIns()).toBe(1);
  });

  test("malformed requests store nothing", async () => {
    const withRecordset = validTaskIns(runId, 1n);
    const cases: Array<Parameters<typeof pushSharedTaskIns>[0]> = [
      { contents: [encoded(1)], taskInsList: [byIndex(envelope(runId, 1n), 1)] }, // index out of range
      { contents: [encoded(1)], taskInsList: [byIndex(withRecordset, 0)] }, // carries its own recordset
      { contents: [Buffer.from([0xff, 0xff])], taskInsList: [byIndex(envelope(runId, 1n), 0)] }, // not a RecordSet
      { contents: [encoded(1), encoded(2)], taskInsList: [byIndex(envelope(runId, 1n), 0)] }, // unreferenced
      { contents: [], taskInsList: [byDigest(envelope(runId, 1n), Buffer.alloc(5))] }, // digest not SHA-256
      { contents: [encoded(1)], taskInsList: [] }, // content without TaskIns
    ];
    for (const request of cases) await expect(pushSharedTaskIns(request, state)).rejects.toThrow(MalformedMessageError);
    expect([await state.numTaskIns(), await state.numSharedContents()]).toEqual([0, 0]);
  });

  test("the run's byte limit counts shared content once and refuses an over-limit upload whole", async () => {
    // 100 TaskIns of one 50 kB content fit in 200 kB; 100 copies would not.
    const many = Array.from({ length: 100 }, (_, i) => byIndex(envelope(runId, BigInt(i + 1)), 0));
    expect(
      (await pushSharedTaskIns({ contents: [encoded(1, 50_000)], taskInsList: many }, state)).taskIds,
    ).toHaveLength(100);
    await expect(
      pushSharedTaskIns({ contents: [encoded(2, 150_000)], taskInsList: [byIndex(envelope(runId, 1n), 0)] }, state),
    ).rejects.toThrow(ResourceExhaustedError);
    expect([await state.numTaskIns(), await state.numSharedContents()]).toEqual([100, 1]);
  });
});
