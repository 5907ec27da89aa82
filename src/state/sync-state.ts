/**
 * Wraps a synchronous in-process backend (memory, SQLite) as the Promise-returning State.
 * Each call runs to completion synchronously, so it stays atomic; only its result is delivered
 * as a Promise (a throw becomes a rejection).
 */
import type { State, StateEvents, SyncState } from "./state";

function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

/** The State view of `sync`. Closing it closes `sync`. */
export function promisedState(sync: SyncState): State {
  return {
    kind: sync.kind,
    storeTaskIns: (taskIns, shared) => settle(() => sync.storeTaskIns(taskIns, shared)),
    sharedContent: (runId, digest) => settle(() => sync.sharedContent(runId, digest)),
    numSharedContents: () => settle(() => sync.numSharedContents()),
    getTaskIns: (nodeId, limit) => settle(() => sync.getTaskIns(nodeId, limit)),
    storeTaskRes: (taskRes) => settle(() => sync.storeTaskRes(taskRes)),
    getTaskRes: (taskIds, limit) => settle(() => sync.getTaskRes(taskIds, limit)),
    deleteTasks: (taskIds) =>
      settle(() => {
        sync.deleteTasks(taskIds);
      }),
    numTaskIns: () => settle(() => sync.numTaskIns()),
    numTaskRes: () => settle(() => sync.numTaskRes()),
    createNode: (pingInterval, publicKey) => settle(() => sync.createNode(pingInterval, publicKey)),
    deleteNode: (nodeId) =>
      settle(() => {
        sync.deleteNode(nodeId);
      }),
    getNodes: (runId) => settle(() => sync.getNodes(runId)),
    getNodeId: (publicKey) => settle(() => sync.getNodeId(publicKey)),
    acknowledgePing: (nodeId, pingInterval) => settle(() => sync.acknowledgePing(nodeId, pingInterval)),
    createRun: (fabId, fabVersion, overrideConfig) => settle(() => sync.createRun(fabId, fabVersion, overrideConfig)),
    getRun: (runId) => settle(() => sync.getRun(runId)),
    checkStorage: (bytesByRun) =>
      settle(() => {
        sync.checkStorage(bytesByRun);
      }),
    storedBytes: (runId) => settle(() => sync.storedBytes(runId)),
    purge: (options) => settle(() => sync.purge(options)),
    subscribe: (events: StateEvents) => sync.subscribe(events),
    close: () =>
      settle(() => {
        sync.close();
      }),
  };
}
