import * as grpc from "@grpc/grpc-js";
import { SuperNodeAuth } from "../../src/auth/client-auth";
import { base64UrlPadded } from "../../src/auth/crypto";
import { loadPublicKeyFile, parseOpenSshPrivateKey, publicPemOf } from "../../src/auth/keys";
import { AuthenticationError, InvalidKeyFileError } from "../../src/core/errors";
import { PingRequest, PullTaskInsRequest, PushTaskResRequest } from "../../src/proto/flwr/proto/fleet";
import { GetRunRequest } from "../../src/proto/flwr/proto/run";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import * as v from "./vectors";
import { generateEcKeyPair } from "../helpers/ec-keys";

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

function serverHeaders(value?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (value !== undefined) md.set("public-key", value);
  return md;
}

function vectorClient(): SuperNodeAuth {
  return new SuperNodeAuth(parseOpenSshPrivateKey(v.CLIENT_PRIVATE_OPENSSH), v.CLIENT_CANONICAL_PEM);
}

describe("the test vectors of test/auth/vectors.ts through SuperNodeAuth", () => {
  test("the public-key header of the vector client", () => {
    const auth = vectorClient();
    expect(auth.publicKeyHeader).toBe(v.CLIENT_PUBLIC_KEY_HEADER);
    expect(auth.publicKeyPem).toBe(v.CLIENT_CANONICAL_PEM);
  });

  test.each([
    [
      "PingRequest",
      PingRequest.fromPartial({ node: { nodeId: v.NODE_ID }, pingInterval: 30 }),
      v.PING_HEX,
      v.PING_TOKEN,
    ],
    ["PullTaskInsRequest", PullTaskInsRequest.fromPartial({ node: { nodeId: v.NODE_ID } }), v.PULL_HEX, v.PULL_TOKEN],
    ["GetRunRequest", GetRunRequest.fromPartial({ runId: v.RUN_ID }), v.GET_RUN_HEX, v.GET_RUN_TOKEN],
    [
      "PushTaskResRequest",
      PushTaskResRequest.decode(Buffer.from(v.PUSH_TASK_RES_HEX, "hex")),
      v.PUSH_TASK_RES_HEX,
      v.PUSH_TASK_RES_TOKEN,
    ],
  ] as const)("%s: canonical bytes and auth-token", (name, request, bytesHex, token) => {
    const auth = vectorClient();
    auth.acceptCreateNodeMetadata(serverHeaders(v.SERVER_PUBLIC_KEY_HEADER));
    const signed = auth.signedRequest(name, request);
    expect(hex(signed.bytes)).toBe(bytesHex);
    expect(signed.metadata.get("auth-token")).toEqual([token]);
    expect(signed.metadata.get("public-key")).toEqual([v.CLIENT_PUBLIC_KEY_HEADER]);
    expect(auth.metadataFor(name, request).get("auth-token")).toEqual([token]);
  });
});

describe("the CreateNode handshake", () => {
  test("CreateNode carries only public-key; other requests need the shared key first", () => {
    const auth = vectorClient();
    expect(auth.hasSharedKey).toBe(false);
    const md = auth.metadataFor("CreateNodeRequest", { pingInterval: 30 });
    expect(md.get("public-key")).toEqual([v.CLIENT_PUBLIC_KEY_HEADER]);
    expect(md.get("auth-token")).toEqual([]);
    const ping = PingRequest.fromPartial({ node: { nodeId: 1n }, pingInterval: 30 });
    expect(() => auth.metadataFor("PingRequest", ping)).toThrow(AuthenticationError);
    expect(() => auth.metadataFor("PingRequest", ping)).toThrow(/CreateNode must succeed first/);
  });

  test("a CreateNode response without public-key means authentication is off on the SuperLink", () => {
    const auth = vectorClient();
    expect(() => auth.acceptCreateNodeMetadata(serverHeaders())).toThrow(
      new AuthenticationError("SuperLink did not send its public key; is authentication enabled on the SuperLink?"),
    );
    expect(auth.hasSharedKey).toBe(false);
  });

  test("an unusable server key is an AuthenticationError and changes nothing", () => {
    const auth = vectorClient();
    auth.acceptCreateNodeMetadata(serverHeaders(v.SERVER_PUBLIC_KEY_HEADER));
    expect(() => auth.acceptCreateNodeMetadata(serverHeaders(base64UrlPadded(Buffer.from("not a pem"))))).toThrow(
      /SuperLink sent an invalid public key/,
    );
    expect(() => auth.acceptCreateNodeMetadata(serverHeaders("abc"))).toThrow(AuthenticationError);
    const p256 = generateEcKeyPair("P-256");
    expect(() =>
      auth.acceptCreateNodeMetadata(serverHeaders(base64UrlPadded(Buffer.from(publicPemOf(p256.privateKey))))),
    ).toThrow(/on P-256 but this SuperNode's key is on P-384/);
    // The key from the successful handshake is still in use.
    const ping = PingRequest.fromPartial({ node: { nodeId: v.NODE_ID }, pingInterval: 30 });
    expect(auth.metadataFor("PingRequest", ping).get("auth-token")).toEqual([v.PING_TOKEN]);
    expect(auth.serverPublicKeyPem).toBe(Buffer.from(v.SERVER_PUBLIC_KEY_HEADER, "base64").toString());
  });

  test("nodes of one process that get the same SuperLink key each derive their own HMAC key; a new SuperLink key is parsed anew", () => {
    const server = generateEcKeyPair("P-384");
    const otherServer = generateEcKeyPair("P-384");
    const header = (key: typeof server): string => base64UrlPadded(Buffer.from(publicPemOf(key.privateKey)));
    const nodes = [0, 1].map(() => new SuperNodeAuth(generateEcKeyPair("P-384").privateKey));
    const ping = PingRequest.fromPartial({ node: { nodeId: 5n }, pingInterval: 30 });
    const tokens = (): unknown[] => nodes.map((n) => n.metadataFor("PingRequest", ping).get("auth-token")[0]);
    for (const n of nodes) n.acceptCreateNodeMetadata(serverHeaders(header(server)));
    const first = tokens();
    expect(first[0]).not.toEqual(first[1]);
    // The vector client against the vector SuperLink key in between: still the vector's token.
    const auth = vectorClient();
    auth.acceptCreateNodeMetadata(serverHeaders(v.SERVER_PUBLIC_KEY_HEADER));
    expect(
      auth
        .metadataFor("PingRequest", PingRequest.fromPartial({ node: { nodeId: v.NODE_ID }, pingInterval: 30 }))
        .get("auth-token"),
    ).toEqual([v.PING_TOKEN]);
    for (const n of nodes) n.acceptCreateNodeMetadata(serverHeaders(header(server)));
    expect(tokens()).toEqual(first);
    for (const n of nodes) n.acceptCreateNodeMetadata(serverHeaders(header(otherServer)));
    const other = tokens();
    expect(other[0]).not.toEqual(first[0]);
    expect(other[1]).not.toEqual(first[1]);
    expect(nodes[0]!.serverPublicKeyPem).toBe(publicPemOf(otherServer.privateKey));
  });

  test("reset() forgets the shared key", () => {
    const auth = vectorClient();
    auth.acceptCreateNodeMetadata(serverHeaders(v.SERVER_PUBLIC_KEY_HEADER));
    expect(auth.hasSharedKey).toBe(true);
    auth.reset();
    expect(auth.hasSharedKey).toBe(false);
    expect(auth.serverPublicKeyPem).toBeUndefined();
  });
});

describe("fromFiles", () => {
  let fx: Fixtures;
  beforeAll(() => {
    fx = generateFixtures(2);
  });
  afterAll(() => fx?.cleanup());

  test("loads a fixture key pair", () => {
    const auth = SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[0]!);
    const pem = loadPublicKeyFile(fx.clientPublicKeys[0]!);
    expect(auth.publicKeyPem).toBe(pem);
    expect(auth.publicKeyHeader).toBe(base64UrlPadded(Buffer.from(pem)));
  });

  test("refuses a private and public key that are not one pair", () => {
    expect(() => SuperNodeAuth.fromFiles(fx.clientPrivateKeys[0]!, fx.clientPublicKeys[1]!)).toThrow(
      InvalidKeyFileError,
    );
  });
});
