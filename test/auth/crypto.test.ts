import { createPublicKey } from "node:crypto";
import { AuthenticationError, MalformedMessageError } from "../../src/core/errors";
import {
  base64UrlPadded,
  computeAuthToken,
  decodeBase64UrlLikePython,
  deriveHmacKey,
  ecdhSharedSecret,
  hkdfSha256,
  verifyAuthToken,
} from "../../src/auth/crypto";
import { parseOpenSshPrivateKey, parseOpenSshPublicKey } from "../../src/auth/keys";
import * as v from "./vectors";
import { generateEcKeyPair } from "../helpers/ec-keys";

const clientKey = parseOpenSshPrivateKey(v.CLIENT_PRIVATE_OPENSSH);
const serverKey = parseOpenSshPrivateKey(v.SERVER_PRIVATE_OPENSSH);
const clientPem = parseOpenSshPublicKey(v.CLIENT_PUBLIC_OPENSSH);
const serverPem = parseOpenSshPublicKey(v.SERVER_PUBLIC_OPENSSH);
const hmacKey = Buffer.from(v.HMAC_KEY_TEXT, "ascii");

describe("base64UrlPadded", () => {
  test("is Python's urlsafe_b64encode: URL-safe alphabet, '=' kept", () => {
    expect(base64UrlPadded(Buffer.from([0xfb, 0xff]))).toBe("-_8=");
    expect(base64UrlPadded(Buffer.from("a"))).toBe("YQ==");
    expect(base64UrlPadded(new Uint8Array(0))).toBe("");
  });

  test("honours the view of a Uint8Array into a larger buffer", () => {
    const backing = new Uint8Array([1, 2, 0xfb, 0xff, 3]);
    expect(base64UrlPadded(backing.subarray(2, 4))).toBe("-_8=");
  });

  test("encodes the vector PEMs to the vector header values", () => {
    expect(base64UrlPadded(Buffer.from(clientPem))).toBe(v.CLIENT_PUBLIC_KEY_HEADER);
    expect(base64UrlPadded(Buffer.from(serverPem))).toBe(v.SERVER_PUBLIC_KEY_HEADER);
  });
});

describe("decodeBase64UrlLikePython", () => {
  test("round-trips padded URL-safe text", () => {
    expect(decodeBase64UrlLikePython(v.CLIENT_PUBLIC_KEY_HEADER).toString()).toBe(clientPem);
    expect(decodeBase64UrlLikePython("-_8=")).toEqual(Buffer.from([0xfb, 0xff]));
  });

  test("accepts the standard alphabet too", () => {
    expect(decodeBase64UrlLikePython("+/8=")).toEqual(Buffer.from([0xfb, 0xff]));
  });

  test("skips characters outside the alphabet", () => {
    expect(decodeBase64UrlLikePython("Y*W\nJ j")).toEqual(Buffer.from("abc"));
  });

  test("missing padding throws 'Incorrect padding'", () => {
    expect(() => decodeBase64UrlLikePython("YQ")).toThrow(new MalformedMessageError("Incorrect padding"));
    expect(() => decodeBase64UrlLikePython(v.CLIENT_PUBLIC_KEY_HEADER.replace(/=+$/, ""))).toThrow("Incorrect padding");
  });

  test("one data character too many throws Python's length message", () => {
    expect(() => decodeBase64UrlLikePython("YWJjZ")).toThrow(
      "Invalid base64-encoded string: number of data characters (5) cannot be 1 more than a multiple of 4",
    );
  });

  test("stops at the padding that completes a quantum", () => {
    expect(decodeBase64UrlLikePython("YQ==YWJj")).toEqual(Buffer.from("a"));
    // A '=' before two data characters is ignored, as in CPython.
    expect(decodeBase64UrlLikePython("=YQ==")).toEqual(Buffer.from("a"));
  });

  test("empty input decodes to empty bytes", () => {
    expect(decodeBase64UrlLikePython("")).toEqual(Buffer.alloc(0));
  });

  test("rejects non-ASCII text", () => {
    expect(() => decodeBase64UrlLikePython("YQ==é")).toThrow("only ASCII");
  });
});

describe("key agreement", () => {
  test("ECDH Z of the vector keys, from both sides", () => {
    expect(ecdhSharedSecret(clientKey, serverPem).toString("hex")).toBe(v.ECDH_Z_HEX);
    expect(ecdhSharedSecret(serverKey, clientPem).toString("hex")).toBe(v.ECDH_Z_HEX);
  });

  test("HKDF-SHA256 okm of Z", () => {
    expect(hkdfSha256(Buffer.from(v.ECDH_Z_HEX, "hex")).toString("hex")).toBe(v.HKDF_OKM_HEX);
  });

  test("the HMAC key is the 44-character padded base64url text of the okm", () => {
    const fromClient = deriveHmacKey(clientKey, serverPem);
    expect(fromClient.toString("ascii")).toBe(v.HMAC_KEY_TEXT);
    expect(fromClient).toHaveLength(44);
    expect(deriveHmacKey(serverKey, clientPem)).toEqual(fromClient);
  });

  test("keys on different curves cannot agree: AuthenticationError", () => {
    const p256 = generateEcKeyPair("P-256");
    const p256Pem = createPublicKey(p256.privateKey).export({ type: "spki", format: "pem" }) as string;
    expect(() => deriveHmacKey(serverKey, p256Pem)).toThrow(AuthenticationError);
  });
});

describe("auth tokens", () => {
  const cases = [
    ["Ping", v.PING_HEX, v.PING_TOKEN],
    ["PullTaskIns", v.PULL_HEX, v.PULL_TOKEN],
    ["GetRun", v.GET_RUN_HEX, v.GET_RUN_TOKEN],
    ["PushTaskRes (511 bytes)", v.PUSH_TASK_RES_HEX, v.PUSH_TASK_RES_TOKEN],
  ] as const;

  test.each(cases)("%s token over the vector bytes", (_name, hex, token) => {
    const tag = computeAuthToken(hmacKey, Buffer.from(hex, "hex"));
    expect(base64UrlPadded(tag)).toBe(token);
    expect(verifyAuthToken(hmacKey, Buffer.from(hex, "hex"), decodeBase64UrlLikePython(token))).toBe(true);
  });

  test("verification fails for a changed payload, key or token", () => {
    const payload = Buffer.from(v.PING_HEX, "hex");
    const token = decodeBase64UrlLikePython(v.PING_TOKEN);
    const changed = Buffer.from(payload);
    changed[changed.length - 1]! ^= 1;
    expect(verifyAuthToken(hmacKey, changed, token)).toBe(false);
    expect(verifyAuthToken(Buffer.from("x".repeat(44)), payload, token)).toBe(false);
    const badToken = Buffer.from(token);
    badToken[0]! ^= 0x80;
    expect(verifyAuthToken(hmacKey, payload, badToken)).toBe(false);
  });

  test("tokens of the wrong length are rejected without throwing", () => {
    const payload = Buffer.from(v.PING_HEX, "hex");
    const token = decodeBase64UrlLikePython(v.PING_TOKEN);
    expect(verifyAuthToken(hmacKey, payload, token.subarray(0, 31))).toBe(false);
    expect(verifyAuthToken(hmacKey, payload, Buffer.concat([token, Buffer.from([0])]))).toBe(false);
    expect(verifyAuthToken(hmacKey, payload, new Uint8Array(0))).toBe(false);
  });
});
