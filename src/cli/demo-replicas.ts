/**
 * `npm run demo:replicas`: the demo deployment (src/cli/demo.ts) with its state in PostgreSQL
 * and two SuperLink replicas sharing it: a throw-away PostgreSQL server (src/cli/local-postgres.ts),
 * replicas A and B with the same certificates, SuperLink key pair and allowlist, SuperNode 1 on
 * replica A, SuperNode 2 on replica B, and the ServerApp on replica A. Tasks pushed through A
 * reach the SuperNode on B (LISTEN/NOTIFY wakes its long poll). Everything is stopped at the
 * end, and the database deleted.
 */
import { errorMessage } from "../core/errors";
import {
  type Child,
  DEMO_SUPERLINK_ARGS,
  demoServerAppArgs,
  ensureCredentials,
  startChild,
  stopGroup,
  waitFor,
  demoSuperNodeArgs,
} from "./demo";
import { type LocalPostgres, localPostgresUnavailableReason, startLocalPostgres } from "./local-postgres";

const REPLICAS = ["a", "b"] as const;

function say(line: string): void {
  process.stderr.write(`[demo:replicas] ${line}\n`);
}

/** Starts a daemon; `ready` resolves with its first `event` log record. */
function startUntil(
  name: string,
  bin: string,
  args: string[],
  event: string,
): { child: Child; ready: Promise<Record<string, unknown>> } {
  let hook: ((rec: Record<string, unknown>) => void) | undefined;
  const child = startChild(name, bin, args, { onLog: (rec) => hook?.(rec) });
  const ready = waitFor<Record<string, unknown>>(name, child, (resolve) => {
    hook = (rec) => {
      if (rec["event"] === event) resolve(rec);
    };
  });
  return { child, ready };
}

export async function main(): Promise<number> {
  const unavailable = localPostgresUnavailableReason();
  if (unavailable !== undefined) {
    say(`cannot start PostgreSQL here: ${unavailable}`);
    return 2;
  }
  const links: Child[] = [];
  const others: Child[] = [];
  let postgres: LocalPostgres | undefined;
  const stop = async (): Promise<void> => {
    await stopGroup(others);
    await stopGroup(links);
    await postgres?.stop();
  };
  const onSignal = (): void => {
    say("interrupted: stopping all processes");
    void stop().then(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    ensureCredentials();
    postgres = await startLocalPostgres();
    say(`PostgreSQL ready (a throw-away server): ${postgres.url}`);
    const ready: Array<Record<string, unknown>> = [];
    for (const name of REPLICAS) {
      const link = startUntil(
        `replica-${name}`,
        "flower-superlink",
        [...DEMO_SUPERLINK_ARGS, "--database", postgres.url],
        "superlink.ready",
      );
      links.push(link.child);
      ready.push(await link.ready);
    }
    for (const [i, rec] of ready.entries()) {
      say(
        `replica ${String(REPLICAS[i])}: Driver API ${String(rec["driverAddress"])}, Fleet API ${String(rec["fleetAddress"])}`,
      );
    }
    const nodesReady = [1, 2].map((i) => {
      const fleet = String(ready[(i - 1) % ready.length]?.["fleetAddress"]);
      const node = startUntil(`node-${i}`, "flower-client-app", demoSuperNodeArgs(fleet, i, 2), "supernode.ready");
      others.push(node.child);
      return node.ready;
    });
    await Promise.all(nodesReady);
    say("SuperNode 1 is on replica a, SuperNode 2 on replica b; starting the ServerApp on replica a");
    const serverApp = startChild(
      "serverapp",
      "flower-server-app",
      demoServerAppArgs(String(ready[0]?.["driverAddress"])),
      { stdout: "inherit" },
    );
    others.push(serverApp);
    const code = await serverApp.exited;
    say(code === 0 ? "ServerApp finished; stopping everything" : `ServerApp failed with exit code ${code}`);
    await stop();
    return code;
  } catch (err) {
    say(`failed: ${errorMessage(err)}`);
    await stop();
    return 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

if (require.main === module) void main().then((code) => process.exit(code));
