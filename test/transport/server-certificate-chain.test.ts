/**
 * What our TLS gRPC servers send in the handshake: the certificate file's chain, as given, and
 * not the CA of --ssl-ca-certfile after it (Flower's gRPC server does the same). Every client
 * already holds that CA; parsing and checking it again cost each new connection about a
 * millisecond of CPU on both ends (bench `handshake`, bench/README.md). An operator whose
 * certificate comes from an intermediate CA puts the intermediate in the certificate file.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type DetailedPeerCertificate, type TLSSocket, connect } from "node:tls";
import { type RunningGrpcServer, startGrpcServer } from "../../src/transport/grpc-server";
import { serverCredentials } from "../../src/transport/tls";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";

let fx: Fixtures;
const servers: RunningGrpcServer[] = [];
const sockets: TLSSocket[] = [];

beforeAll(() => {
  fx = generateFixtures(1);
});
afterAll(() => fx.cleanup());
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close(0);
});

async function startServer(certFile: string, keyFile: string): Promise<RunningGrpcServer> {
  const credentials = serverCredentials({
    caCert: fx.read(fx.caCert),
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
  });
  const server = await startGrpcServer("127.0.0.1:0", credentials, []);
  servers.push(server);
  return server;
}

/** Handshakes with `address`; `ca` undefined: trusts nothing, so only what the server sent is in the chain. */
async function handshake(address: string, ca?: Buffer): Promise<TLSSocket> {
  const [host, port] = [
    address.slice(0, address.lastIndexOf(":")),
    Number(address.slice(address.lastIndexOf(":") + 1)),
  ];
  const socket = connect({
    host,
    port,
    servername: "localhost",
    ALPNProtocols: ["h2"],
    ...(ca !== undefined ? { ca } : { rejectUnauthorized: false }),
  });
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", resolve);
    socket.once("error", reject);
  });
  return socket;
}

/** Subjects of the chain as the client sees it, leaf first. */
function chainSubjects(socket: TLSSocket): string[] {
  const subjects: string[] = [];
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (cert !== undefined && cert.fingerprint256 !== undefined && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    const cn = cert.subject.CN;
    subjects.push(Array.isArray(cn) ? cn.join(",") : (cn ?? ""));
    cert = cert.issuerCertificate;
  }
  return subjects;
}

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

describe("TLS gRPC server certificate chain", () => {
  it("sends the certificate file's certificate without the CA, and clients trusting the CA still verify it", async () => {
    const server = await startServer(fx.serverCert, fx.serverKey);
    const untrusting = await handshake(server.address);
    expect(chainSubjects(untrusting)).toEqual(["localhost"]);
    const trusting = await handshake(server.address, fx.read(fx.caCert));
    expect(trusting.authorized).toBe(true);
  });

  it("sends an intermediate CA that the certificate file carries after the server certificate", async () => {
    const dir = fx.dir;
    const path = (name: string): string => join(dir, name);
    writeFileSync(
      path("intermediate.ext"),
      "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    writeFileSync(path("leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    const ecKey = (name: string): void =>
      openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path(name)]);
    ecKey("intermediate.key");
    openssl([
      "req",
      "-new",
      "-key",
      path("intermediate.key"),
      "-subj",
      "/CN=Test Intermediate",
      "-out",
      path("intermediate.csr"),
    ]);
    openssl(
      ["x509", "-req", "-in", path("intermediate.csr"), "-CA", fx.caCert, "-CAkey", fx.caKey, "-CAcreateserial"].concat(
        ["-days", "2", "-extfile", path("intermediate.ext"), "-out", path("intermediate.pem")],
      ),
    );
    ecKey("leaf.key");
    openssl(["req", "-new", "-key", path("leaf.key"), "-subj", "/CN=localhost", "-out", path("leaf.csr")]);
    openssl(
      [
        "x509",
        "-req",
        "-in",
        path("leaf.csr"),
        "-CA",
        path("intermediate.pem"),
        "-CAkey",
        path("intermediate.key"),
      ].concat(["-CAcreateserial", "-days", "2", "-extfile", path("leaf.ext"), "-out", path("leaf.pem")]),
    );
    writeFileSync(
      path("leaf-chain.pem"),
      Buffer.concat([readFileSync(path("leaf.pem")), readFileSync(path("intermediate.pem"))]),
    );

    const server = await startServer(path("leaf-chain.pem"), path("leaf.key"));
    const untrusting = await handshake(server.address);
    expect(chainSubjects(untrusting)).toEqual(["localhost", "Test Intermediate"]);
    const trusting = await handshake(server.address, fx.read(fx.caCert));
    expect(trusting.authorized).toBe(true);
  });
});
