import { MessageType } from "../../src/core/constants";
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
});
