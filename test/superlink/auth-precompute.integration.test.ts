/**
 * The SuperLink in-process with TLS and node authentication precomputes the HMAC keys of its
 * allowlisted keys (src/auth/hmac-key-precompute.ts): nodes register and authenticate with
 * them, and a SuperLink stopped mid-precomputation leaves nothing running.
 */
import { Allowlist } from "../../src/auth/allowlist";
import { loadKeyPairFiles, publicPemOf } from "../../src/auth/keys";
import { IN_MEMORY_DATABASE } from "../../src/core/constants";
import { type SuperLinkConfig, startSuperLink } from "../../src/superlink/superlink";
import { readServerTlsFiles } from "../../src/transport/tls";
import { type Fixtures, generateFixtures } from "../helpers/fixtures";
import { fleetClient, memoryLogger, registerAuthenticated, until } from "./helpers";
import { generateEcKeyPair } from "../helpers/ec-keys";

let fx: Fixtures;
beforeAll(() => {
  fx = generateFixtures(2);
});
afterAll(() => fx.cleanup());

function config(allowlist: Allowlist): SuperLinkConfig {
  return {
    driverApiAddress: "127.0.0.1:0",
    fleetApiAddress: "127.0.0.1:0",
    database: IN_MEMORY_DATABASE,
    tls: readServerTlsFiles({ caCertFile: fx.caCert, certFile: fx.serverCert, keyFile: fx.serverKey }),
    auth: {
      allowlist,
      superlinkKeys: loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey),
      watchAllowlist: false,
    },
  };
}

const PRECOMPUTED = "superlink.hmac-keys-precomputed";

test("nodes whose keys were precomputed register and authenticate", async () => {
  const { logger, lines } = memoryLogger();
  const link = await startSuperLink(config(Allowlist.fromCsvFile(fx.allowlistCsv)), { logger });
  const fleet = fleetClient(link.fleetAddress, fx.read(fx.caCert));
  try {
    await until(() => lines.some((l) => l["event"] === PRECOMPUTED), "the precomputation to finish");
    expect(lines.find((l) => l["event"] === PRECOMPUTED)).toMatchObject({ derived: 2, failed: 0 });
    for (const index of [0, 1]) {
      const { pinged } = await registerAuthenticated(fleet, fx.clientPrivateKeys[index]!, fx.clientPublicKeys[index]!);
      expect(pinged).toBe(true);
    }
  } finally {
    fleet.close();
    await link.close();
  }
});

test("stopping the SuperLink mid-precomputation leaves nothing running", async () => {
  const server = loadKeyPairFiles(fx.superlinkPrivateKey, fx.superlinkPublicKey);
  const curve = server.privateKey.asymmetricKeyDetails?.namedCurve ?? "secp384r1";
  const pems = Array.from({ length: 600 }, () => publicPemOf(generateEcKeyPair(curve).privateKey));
  const { logger, lines } = memoryLogger();
  const link = await startSuperLink(config(new Allowlist(pems)), { logger });
  await link.close();
  // Stopped: the batch never finishes, and no derivation is left to report one later.
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(lines.some((l) => l["event"] === PRECOMPUTED)).toBe(false);
});
