/**
 * The WebCrypto SuperNode authentication (src/auth/web-auth.ts, web-keys.ts) against the spec
 * §4.9 vectors on Node's `globalThis.crypto.subtle` (test/browser/ runs them in Chromium), and
 * its key formats against the node:crypto implementation (keys.ts).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadKeyPairFiles, parseOpenSshPrivateKey, parseOpenSshPublicKey, publicPemOf } from "../../src/auth/keys";
import { WebSuperNodeAuth } from "../../src/auth/web-auth";
import {
  canonicalPemOfPoint,
  checkWebKeyPair,
  generateWebKeyPair,
  openSshPrivateText,
  openSshPublicLine,
  parseOpenSshPrivateText,
  parseOpenSshPublicLine,
  webSshFingerprint,
} from "../../src/auth/web-keys";
import { computeWebAuthVectors } from "../../src/auth/web-vector-check";
import { sshFingerprint } from "../../src/auth/keys";
import { InvalidKeyFileError } from "../../src/core/errors";
import * as v from "./vectors";
import { WEB_VECTOR_INPUTS, expectWebVectors } from "./web-vectors";

test("WebCrypto reproduces every authentication vector", async () => {
  expectWebVectors(await computeWebAuthVectors(WEB_VECTOR_INPUTS));
});

test("a generated pair round-trips through OpenSSH text that node:crypto and ssh-keygen read", async () => {
  const pair = await generateWebKeyPair();
  expect(pair.curve).toBe("P-384");
  const privateText = openSshPrivateText(pair, "browser");
  const publicLine = openSshPublicLine(pair.curve, pair.point, "browser");
  expect(publicLine).toMatch(/^ecdsa-sha2-nistp384 AAAA\S+ browser$/);
  // node:crypto's parser derives the public key from the scalar: it must match.
  expect(publicPemOf(parseOpenSshPrivateKey(privateText))).toBe(parseOpenSshPublicKey(publicLine));
  expect(parseOpenSshPrivateText(privateText)).toEqual(pair);
  expect(await webSshFingerprint(pair.curve, pair.point)).toBe(sshFingerprint(parseOpenSshPublicKey(publicLine)));
  const dir = mkdtempSync(join(tmpdir(), "flwr-web-keys-"));
  try {
    execFileSync("bash", [
      "-c",
      `printf '%s' "$0" > "$1/k" && chmod 600 "$1/k" && ssh-keygen -y -f "$1/k" > "$1/k.pub"`,
      privateText,
      dir,
    ]);
    expect(readFileSync(join(dir, "k.pub"), "utf8").split(" ").slice(0, 2)).toEqual(publicLine.split(" ").slice(0, 2));
    const auth = await WebSuperNodeAuth.create(pair);
    expect(auth.publicKeyPem).toBe(loadKeyPairFiles(join(dir, "k"), join(dir, "k.pub")).publicKeyPem);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("keys that do not belong together, encrypted keys and non-EC keys are refused with a reason", async () => {
  const client = parseOpenSshPrivateText(v.CLIENT_PRIVATE_OPENSSH);
  const server = parseOpenSshPublicLine(v.SERVER_PUBLIC_OPENSSH);
  await expect(checkWebKeyPair({ ...client, point: server.point })).rejects.toThrow(/does not belong/);
  await expect(WebSuperNodeAuth.create({ ...client, point: server.point })).rejects.toBeInstanceOf(InvalidKeyFileError);
  const encrypted = v.CLIENT_PRIVATE_OPENSSH; // re-encode with cipher "aes256-ctr" in the header
  const body = Buffer.from(encrypted.split("\n").slice(1, -2).join(""), "base64");
  const tampered = Buffer.concat([
    body.subarray(0, 15),
    Buffer.from([0, 0, 0, 10]),
    Buffer.from("aes256-ctr"),
    body.subarray(15 + 8),
  ]);
  const text = `-----BEGIN OPENSSH PRIVATE KEY-----\n${tampered.toString("base64")}\n-----END OPENSSH PRIVATE KEY-----\n`;
  expect(() => parseOpenSshPrivateText(text)).toThrow(/passphrase/);
  expect(() =>
    parseOpenSshPublicLine("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWy9mhTzZ1FwEDWHZC9P9dn4kgrkD4dXvNWfxM5HYhd x"),
  ).toThrow(/ECDSA/);
  expect(() => parseOpenSshPublicLine("not a key")).toThrow(InvalidKeyFileError);
  expect(canonicalPemOfPoint(client.curve, client.point)).toBe(v.CLIENT_CANONICAL_PEM);
});
