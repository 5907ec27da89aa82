import type { StateEvents } from "../../src/state/state";
import { LongPollHub, optedInWaitMs } from "../../src/superlink/long-poll";

/** The State surface the hub uses: subscribe, with a handle to fire events by hand. */
function fakeState(): { subscribe(events: StateEvents): () => void; events: Set<StateEvents> } {
  const events = new Set<StateEvents>();
  return {
    events,
    subscribe(e: StateEvents) {
      events.add(e);
      return () => events.delete(e);
    },
  };
}

describe("LongPollHub", () => {
  test("a TaskIns wait is woken only by its own node (or the anonymous key)", async () => {
    const state = fakeState();
    const hub = new LongPollHub(state);
    const forNode = hub.waitForTaskIns(-5555555555555555555n, 60_000);
    const anonymous = hub.waitForTaskIns(undefined, 60_000);
    expect(hub.waiting).toBe(2);
    for (const e of state.events) e.onTaskInsStored?.(42n, false);
    expect(hub.waiting).toBe(2);
    for (const e of state.events) e.onTaskInsStored?.(-5555555555555555555n, false);
    await expect(forNode).resolves.toBe("notified");
    for (const e of state.events) e.onTaskInsStored?.(0n, true);
    await expect(anonymous).resolves.toBe("notified");
    expect(hub.waiting).toBe(0);
    hub.close();
  });

  test("a TaskRes wait is woken by any of its task ids and deregisters from all of them", async () => {
    const state = fakeState();
    const hub = new LongPollHub(state);
    const waiting = hub.waitForTaskRes(["a", "b"], 60_000);
    for (const e of state.events) e.onTaskResStored?.("b");
    await expect(waiting).resolves.toBe("notified");
    expect(hub.waiting).toBe(0);
    hub.close();
  });

  test("timeout, abort and close each end a wait and leave nothing registered", async () => {
    const state = fakeState();
    const hub = new LongPollHub(state);
    await expect(hub.waitForTaskIns(1n, 5)).resolves.toBe("timeout");
    const controller = new AbortController();
    const aborted = hub.waitForTaskIns(1n, 60_000, controller.signal);
    controller.abort();
    await expect(aborted).resolves.toBe("aborted");
    const closed = hub.waitForTaskRes(["x"], 60_000);
    hub.close();
    await expect(closed).resolves.toBe("closing");
    expect(hub.waiting).toBe(0);
    expect(state.events.size).toBe(0); // unsubscribed from State
    await expect(hub.waitForTaskIns(1n, 60_000)).resolves.toBe("closing");
  });

  test("an already aborted signal, a zero timeout or no task ids answer at once", async () => {
    const hub = new LongPollHub(fakeState());
    const controller = new AbortController();
    controller.abort();
    await expect(hub.waitForTaskIns(1n, 60_000, controller.signal)).resolves.toBe("aborted");
    await expect(hub.waitForTaskIns(1n, 0)).resolves.toBe("timeout");
    await expect(hub.waitForTaskRes([], 60_000)).resolves.toBe("timeout");
    expect(hub.waiting).toBe(0);
    hub.close();
  });

  test("revokeNode rejects that node's waits only", async () => {
    const hub = new LongPollHub(fakeState());
    const revoked = hub.waitForTaskIns(7n, 60_000);
    const other = hub.waitForTaskIns(8n, 60_000);
    expect(hub.revokeNode(7n, new Error("gone"))).toBe(1);
    await expect(revoked).rejects.toThrow("gone");
    expect(hub.waiting).toBe(1);
    hub.close();
    await expect(other).resolves.toBe("closing");
  });
});

describe("optedInWaitMs (long polling only for pulls that ask)", () => {
  test("no header, or a header that is not a plain number, means Flower's immediate answer", () => {
    for (const header of [undefined, "", "abc", "-5", "1e3", "12.5", "9999999999"])
      expect(optedInWaitMs(header, 2_000)).toBe(0);
  });
  test("the requested wait is capped at the SuperLink's --long-poll-ms", () => {
    expect(optedInWaitMs("500", 2_000)).toBe(500);
    expect(optedInWaitMs(" 60000 ", 2_000)).toBe(2_000);
    expect(optedInWaitMs("60000", 0)).toBe(0);
  });
});
