import { MessageType } from "../../src/core/constants";
import { collectGarbage } from "../../src/core/garbage-collection";
import { createReply } from "../../src/core/records/serde";
import { RecordSet } from "../../src/core/records/types";
import type { Message } from "../../src/core/records/types";
import { MessageBatcher } from "../../src/server/message-batcher";
import { FakeDriver } from "./fake-driver";

/** A FakeDriver counting its pushes and pulls (and the messages each carried). */
class CountingDriver extends FakeDriver {
  pushes: number[] = [];
  pulls: number[] = [];
  failPush: Error | undefined;

  override async pushMessages(msgs: Message[]): Promise<string[]> {
    this.pushes.push(msgs.length);
    if (this.failPush) throw this.failPush;
    return super.pushMessages(msgs);
  }

  override async pullMessages(ids: string[]): Promise<Message[]> {
    this.pulls.push(ids.length);
    return super.pullMessages(ids);
  }
}

/** The reply's replyTo, and nothing that keeps the reply (nor the promise of it) referenced. */
async function replyTo(batcher: MessageBatcher, msg: Message): Promise<string | undefined> {
  return (await batcher.sendAndReceive(msg))?.metadata.replyToMessage;
}

function message(driver: FakeDriver, nodeId: bigint): Message {
  return driver.createMessage(new RecordSet(), MessageType.QUERY, nodeId, "1");
}

describe("MessageBatcher (a round's one-message calls share pushes and pulls)", () => {
  test("calls made together go out in one push and each gets its own reply as it arrives", async () => {
    const driver = new CountingDriver();
    const release = new Map<bigint, () => void>();
    for (let n = 1n; n <= 50n; n++) {
      const node = n;
      driver.addNode(node, (msg) =>
        node === 7n
          ? new Promise((resolve) => release.set(node, () => resolve(msg.content ?? new RecordSet())))
          : Promise.resolve(msg.content ?? new RecordSet()),
      );
    }
    const batcher = new MessageBatcher(driver);
    const calls = Array.from({ length: 50 }, (_, k) => batcher.sendAndReceive(message(driver, BigInt(k + 1))));
    // Everyone but node 7 answers while node 7 is still working.
    const early = await Promise.all(calls.filter((_, k) => k !== 6));
    expect(early.map((r) => r?.metadata.srcNodeId)).toEqual(
      Array.from({ length: 50 }, (_, k) => BigInt(k + 1)).filter((n) => n !== 7n),
    );
    release.get(7n)!();
    expect((await calls[6])?.metadata.srcNodeId).toBe(7n);
    expect(driver.pushes).toEqual([50]);
    // Pulls ask for every message still waiting, not one pull per message.
    expect(driver.pulls[0]).toBe(50);
    expect(driver.pulls.length).toBeLessThan(50);
  });

  test("a timeout or an abort ends only its own call; a message not stored resolves undefined", async () => {
    const driver = new CountingDriver();
    driver.addNode(1n, () => new Promise(() => undefined)); // never answers
    driver.addNode(2n, (msg) => Promise.resolve(msg.content ?? new RecordSet()));
    driver.addNode(3n, () => new Promise(() => undefined));
    const batcher = new MessageBatcher(driver);
    const controller = new AbortController();
    const silent = batcher.sendAndReceive(message(driver, 1n), { timeoutMs: 300 });
    const answered = batcher.sendAndReceive(message(driver, 2n), { timeoutMs: 60_000 });
    const aborted = batcher.sendAndReceive(message(driver, 3n), { signal: controller.signal });
    expect((await answered)?.metadata.srcNodeId).toBe(2n);
    controller.abort(new Error("stop"));
    await expect(aborted).rejects.toThrow("stop");
    await expect(silent).resolves.toBeUndefined();

    const notStored = new CountingDriver();
    notStored.pushMessages = async (msgs) => msgs.map(() => "");
    await expect(new MessageBatcher(notStored).sendAndReceive(message(notStored, 1n))).resolves.toBeUndefined();
  });

  test("a failed push rejects every call it carried", async () => {
    const driver = new CountingDriver();
    driver.addNode(1n, (msg) => Promise.resolve(msg.content ?? new RecordSet()));
    driver.failPush = new Error("SuperLink gone");
    const batcher = new MessageBatcher(driver);
    const calls = [batcher.sendAndReceive(message(driver, 1n)), batcher.sendAndReceive(message(driver, 1n))];
    for (const call of calls) await expect(call).rejects.toThrow("SuperLink gone");
    expect(driver.pushes).toEqual([2]);
  });

  test("a delivered reply is not kept by the pull loop while it waits for the next one", async () => {
    // Replies built fresh on each pull and kept nowhere by the driver; the second message is
    // never answered, so the loop goes on pulling (held pulls) after delivering the first reply.
    const driver = new FakeDriver();
    const held: Array<() => void> = [];
    let answer: Message | undefined;
    driver.pushMessages = async (msgs) => msgs.map((m) => `id-${m.metadata.dstNodeId}`);
    driver.pullMessages = async (ids) => {
      const reply = answer;
      answer = undefined;
      if (reply !== undefined && ids.includes(reply.metadata.replyToMessage)) return [reply];
      await new Promise<void>((resolve) => held.push(resolve));
      return [];
    };
    const batcher = new MessageBatcher(driver);
    const first = message(driver, 1n);
    answer = createReply({ ...first, metadata: { ...first.metadata, messageId: "id-1" } }, new RecordSet());
    let done = false;
    const registry = new FinalizationRegistry(() => (done = true));
    registry.register(answer, undefined);
    const stop = new AbortController();
    const unanswered = batcher.sendAndReceive(message(driver, 2n), { signal: stop.signal });
    expect(await replyTo(batcher, first)).toBe("id-1");
    // The loop is now held in its next pull; the reply, dropped here, must be collectable.
    for (let i = 0; i < 50 && !done; i++) {
      collectGarbage();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(done).toBe(true);
    expect(held.length).toBeGreaterThan(0);
    stop.abort(new Error("end of test"));
    await expect(unanswered).rejects.toThrow("end of test");
    for (const release of held) release();
  });
});
