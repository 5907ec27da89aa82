/**
 * A real SuperLink (in-process, TLS, 127.0.0.1:0) and minimal fake SuperNodes that speak the
 * Fleet API directly: CreateNode, ping, PullTaskIns, PushTaskRes. Replies are made with the
 * shared serde (createReply + messageToTaskRes), as a SuperNode does (docs/protocol.md, "Messages and replies").
 */
import type * as grpc from "@grpc/grpc-js";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { silentLogger } from "../../src/core/logger";
import { createReply, messageFromTaskIns, messageToTaskRes } from "../../src/core/records/serde";
import type { Message } from "../../src/core/records/types";
import { FleetClient, type PullTaskInsRequest, type PullTaskInsResponse } from "../../src/proto/flwr/proto/fleet";
import type { TaskRes } from "../../src/proto/flwr/proto/task";
import { type SuperLinkHandle, startSuperLink } from "../../src/superlink/superlink";
import { createClient, unaryCall } from "../../src/transport/channel";
import { channelCredentials, readServerTlsFiles } from "../../src/transport/tls";
import type { Fixtures } from "../helpers/fixtures";
import type { FakeNode } from "../server/fake-driver";

export async function startTestSuperLink(fx: Fixtures, opts: { longPollMs?: number } = {}): Promise<SuperLinkHandle> {
  return startSuperLink(
    {
      driverApiAddress: "127.0.0.1:0",
      fleetApiAddress: "127.0.0.1:0",
      database: IN_MEMORY_DATABASE,
      tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
      longPollMs: opts.longPollMs ?? 2_000,
      // Below the default 10 s minimum, so a fake node announcing 1 s goes offline in a second.
      limits: { pingIntervalBounds: { min: 1, max: 1800 } },
    },
    { logger: silentLogger() },
  );
}

/** What a fake node may answer: a FakeNode result, or a raw TaskRes (to send malformed replies). */
export type FleetNodeHandler = (msg: Message) => ReturnType<FakeNode> | Promise<{ raw: TaskRes }>;

export class FakeSuperNode {
  private stopped = false;
  private pull: grpc.ClientUnaryCall | undefined;
  private pinger: NodeJS.Timeout | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  /** Messages received, in order. */
  readonly received: Message[] = [];

  private constructor(
    private readonly client: FleetClient,
    readonly nodeId: bigint,
    private readonly handler: FleetNodeHandler,
  ) {}

  /** Creates the node (with `pingInterval` seconds), starts pinging and serving messages. */
  static async start(
    fleetAddress: string,
    ca: Buffer,
    handler: FleetNodeHandler,
    pingInterval = 30,
  ): Promise<FakeSuperNode> {
    const client = createClient(FleetClient, fleetAddress, channelCredentials({ rootCertificates: ca }));
    const { response } = await unaryCall(client.createNode.bind(client), { pingInterval });
    const node = new FakeSuperNode(client, response.node!.nodeId, handler);
    node.pinger = setInterval(
      () => {
        client.ping({ node: { nodeId: node.nodeId, anonymous: false }, pingInterval }, () => undefined);
      },
      (pingInterval * 1000) / 3,
    );
    node.loopDone = node.serve();
    return node;
  }

  /** Stops silently, without DeleteNode: the SuperLink sees the node go offline when its ping expires. */
  async die(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pinger);
    this.pull?.cancel();
    await this.loopDone;
    this.client.close();
  }

  private async serve(): Promise<void> {
    const node = { nodeId: this.nodeId, anonymous: false };
    while (!this.stopped) {
      let taskInsList;
      try {
        const { response } = await unaryCall<PullTaskInsRequest, PullTaskInsResponse>(
          (req, md, options, cb) => {
            this.pull = this.client.pullTaskIns(req, md, options, cb);
            return this.pull;
          },
          { node, taskIds: [] },
        );
        taskInsList = response.taskInsList;
      } catch {
        if (this.stopped) return;
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      for (const taskIns of taskInsList) {
        const msg = messageFromTaskIns(taskIns);
        this.received.push(msg);
        void this.answer(msg);
      }
    }
  }

  private async answer(msg: Message): Promise<void> {
    let result;
    try {
      result = await this.handler(msg);
    } catch (err) {
      result = { code: 2, reason: String(err) };
    }
    if (result === "silent" || this.stopped) return;
    const taskRes = "raw" in result ? result.raw : messageToTaskRes(createReply(msg, result));
    await unaryCall(this.client.pushTaskRes.bind(this.client), { taskResList: [taskRes] }).catch(() => undefined);
  }
}
