/**
 * A TCP load balancer for replica tests: TLS passes through untouched (it only forwards bytes).
 * Each new client connection goes to the next replica in round-robin order; a replica that
 * refuses the connection (dead) is skipped, so clients that reconnect after a replica died land
 * on a live one. When either side closes, so does the other.
 */
import { type AddressInfo, type Server, type Socket, connect, createServer } from "node:net";

export interface TcpProxy {
  /** "127.0.0.1:<port>" to give clients. */
  address: string;
  /** Connections forwarded so far, by target. */
  forwarded: Map<string, number>;
  close(): Promise<void>;
}

export async function startTcpProxy(targets: string[]): Promise<TcpProxy> {
  let next = 0;
  const sockets = new Set<Socket>();
  const forwarded = new Map<string, number>();
  const forward = (client: Socket, attempt: number): void => {
    if (attempt >= targets.length) {
      client.destroy();
      return;
    }
    const target = targets[next++ % targets.length]!;
    const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
    const upstream = connect({ host, port });
    sockets.add(upstream);
    let connected = false;
    upstream.once("connect", () => {
      connected = true;
      forwarded.set(target, (forwarded.get(target) ?? 0) + 1);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on("error", () => {
      if (!connected) forward(client, attempt + 1);
      else client.destroy();
    });
    upstream.on("close", () => {
      sockets.delete(upstream);
      if (connected) client.destroy();
    });
    client.on("close", () => upstream.destroy());
  };
  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    sockets.add(client);
    client.on("error", () => client.destroy());
    client.on("close", () => sockets.delete(client));
    forward(client, 0);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    forwarded,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
