/**
 * The spec §4.9 vectors as inputs for computeWebAuthVectors (src/auth/web-vector-check.ts), and
 * the check of its outputs: shared by the jest run on Node's WebCrypto and the Chromium run.
 */
import type { AuthVectorInputs, AuthVectorOutputs } from "../../src/auth/web-vector-check";
import * as v from "./vectors";

export const WEB_VECTOR_INPUTS: AuthVectorInputs = {
  clientPrivateOpenSsh: v.CLIENT_PRIVATE_OPENSSH,
  serverPrivateOpenSsh: v.SERVER_PRIVATE_OPENSSH,
  clientPublicOpenSsh: v.CLIENT_PUBLIC_OPENSSH,
  serverPublicOpenSsh: v.SERVER_PUBLIC_OPENSSH,
  serverPublicKeyHeader: v.SERVER_PUBLIC_KEY_HEADER,
  pingHex: v.PING_HEX,
  pullHex: v.PULL_HEX,
  getRunHex: v.GET_RUN_HEX,
  pushTaskResHex: v.PUSH_TASK_RES_HEX,
};

export function expectWebVectors(out: AuthVectorOutputs): void {
  expect(out.clientPem).toBe(v.CLIENT_CANONICAL_PEM);
  expect(out.clientPemFromPrivate).toBe(v.CLIENT_CANONICAL_PEM);
  expect(out.clientHeader).toBe(v.CLIENT_PUBLIC_KEY_HEADER);
  expect(Buffer.from(out.serverPem, "latin1").toString("base64").replace(/\+/g, "-").replace(/\//g, "_")).toBe(
    v.SERVER_PUBLIC_KEY_HEADER,
  );
  expect(out.zHex).toBe(v.ECDH_Z_HEX);
  expect(out.zHexFromServer).toBe(v.ECDH_Z_HEX);
  expect(out.okmHex).toBe(v.HKDF_OKM_HEX);
  expect(out.hmacKeyText).toBe(v.HMAC_KEY_TEXT);
  expect(out.tokens).toEqual({
    ping: v.PING_TOKEN,
    pull: v.PULL_TOKEN,
    getRun: v.GET_RUN_TOKEN,
    pushTaskRes: v.PUSH_TASK_RES_TOKEN,
  });
  expect(out.signed).toEqual({
    ping: { hex: v.PING_HEX, token: v.PING_TOKEN },
    pull: { hex: v.PULL_HEX, token: v.PULL_TOKEN },
    getRun: { hex: v.GET_RUN_HEX, token: v.GET_RUN_TOKEN },
    pushTaskRes: { hex: v.PUSH_TASK_RES_HEX, token: v.PUSH_TASK_RES_TOKEN },
  });
}
