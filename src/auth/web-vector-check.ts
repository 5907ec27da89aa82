/**
 * Computes every value of the authentication test vectors (spec §4.9) with the WebCrypto
 * implementation, from the vectors' inputs, so one test can compare them in Node (jest, on
 * Node's `crypto.subtle`) and in a real browser (the page bundle exposes this function).
 */
import { GetRunRequest } from "../proto/flwr/proto/run";
import { PingRequest, PullTaskInsRequest, PushTaskResRequest } from "../proto/flwr/proto/fleet";
import type { FleetRequestName } from "../core/wire/canonical";
import { WebSuperNodeAuth, webAuthToken, webDeriveHmacKey, webEcdhSharedSecret, webHkdfSha256 } from "./web-auth";
import {
  canonicalPemOfPoint,
  importEcdhPrivateKey,
  parseOpenSshPrivateText,
  parseOpenSshPublicLine,
  toBase64UrlPadded,
} from "./web-keys";

export interface AuthVectorInputs {
  clientPrivateOpenSsh: string;
  serverPrivateOpenSsh: string;
  clientPublicOpenSsh: string;
  serverPublicOpenSsh: string;
  serverPublicKeyHeader: string;
  /** Hex bodies of the requests, each MAC'd with the vectors' HMAC key. */
  pingHex: string;
  pullHex: string;
  getRunHex: string;
  pushTaskResHex: string;
}

export interface AuthVectorOutputs {
  clientPem: string;
  clientPemFromPrivate: string;
  serverPem: string;
  clientHeader: string;
  zHex: string;
  /** Z computed from the other side (server private, client public). */
  zHexFromServer: string;
  okmHex: string;
  hmacKeyText: string;
  /** auth-token of each body, by the raw HMAC. */
  tokens: { ping: string; pull: string; getRun: string; pushTaskRes: string };
  /** The same through WebSuperNodeAuth (decode the body, re-encode canonically, sign). */
  signed: Record<"ping" | "pull" | "getRun" | "pushTaskRes", { hex: string; token: string | undefined }>;
}

const fromHex = (text: string): Uint8Array => Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
const toHex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export async function computeWebAuthVectors(v: AuthVectorInputs): Promise<AuthVectorOutputs> {
  const client = parseOpenSshPrivateText(v.clientPrivateOpenSsh);
  const server = parseOpenSshPrivateText(v.serverPrivateOpenSsh);
  const clientPublic = parseOpenSshPublicLine(v.clientPublicOpenSsh);
  const serverPublic = parseOpenSshPublicLine(v.serverPublicOpenSsh);
  const clientPem = canonicalPemOfPoint(clientPublic.curve, clientPublic.point);
  const serverPem = canonicalPemOfPoint(serverPublic.curve, serverPublic.point);
  const clientKey = await importEcdhPrivateKey(client);
  const serverKey = await importEcdhPrivateKey(server);
  const z = await webEcdhSharedSecret(clientKey, client.curve, serverPem);
  const zFromServer = await webEcdhSharedSecret(serverKey, server.curve, clientPem);
  const hmacKey = await webDeriveHmacKey(clientKey, client.curve, serverPem);
  const token = async (hex: string): Promise<string> => toBase64UrlPadded(await webAuthToken(hmacKey, fromHex(hex)));

  const auth = await WebSuperNodeAuth.create(client);
  await auth.acceptServerPublicKeyHeader(v.serverPublicKeyHeader);
  const sign = async (name: FleetRequestName, request: object): Promise<{ hex: string; token: string | undefined }> => {
    const { bytes, headers } = await auth.signedHeaders(name, request);
    return { hex: toHex(bytes), token: headers["auth-token"] };
  };
  return {
    clientPem,
    clientPemFromPrivate: auth.publicKeyPem,
    serverPem,
    clientHeader: auth.publicKeyHeader,
    zHex: toHex(z),
    zHexFromServer: toHex(zFromServer),
    okmHex: toHex(await webHkdfSha256(z)),
    hmacKeyText: String.fromCharCode(...hmacKey),
    tokens: {
      ping: await token(v.pingHex),
      pull: await token(v.pullHex),
      getRun: await token(v.getRunHex),
      pushTaskRes: await token(v.pushTaskResHex),
    },
    signed: {
      ping: await sign("PingRequest", PingRequest.decode(fromHex(v.pingHex))),
      pull: await sign("PullTaskInsRequest", PullTaskInsRequest.decode(fromHex(v.pullHex))),
      getRun: await sign("GetRunRequest", GetRunRequest.decode(fromHex(v.getRunHex))),
      pushTaskRes: await sign("PushTaskResRequest", PushTaskResRequest.decode(fromHex(v.pushTaskResHex))),
    },
  };
}
