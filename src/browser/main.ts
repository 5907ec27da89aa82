/**
 * The browser SuperNode page (index.html): the same SuperNode loop, REST connection, records
 * serde and example ClientApp as the Node programs, with WebCrypto node authentication and a
 * `fetch` transport. Built by scripts/build-browser.js into dist/browser/flwr-browser.js.
 *
 * Query parameters (all optional): `superlink` (REST Fleet API URL; default this page's origin),
 * `partition-id`, `num-partitions`, `train-count`, `test-count`, `backend` (webgl or cpu).
 */
import pino from "pino";
import { WebSuperNodeAuth } from "../auth/web-auth";
import { computeWebAuthVectors } from "../auth/web-vector-check";
import {
  type WebKeyPair,
  generateWebKeyPair,
  openSshPrivateText,
  openSshPublicLine,
  parseOpenSshPrivateText,
  parseOpenSshPublicLine,
  webSshFingerprint,
} from "../auth/web-keys";
import { ClientApp } from "../client/client-app";
import { NumPyClient, type EvaluateResult, type FitResult } from "../client/numpy-client";
import { FlwrError, InvalidKeyFileError, errorMessage } from "../core/errors";
import type { Logger } from "../core/logger";
import type { Config } from "../core/records/legacy-types";
import type { ConfigsScalar, NDArrays } from "../core/records/types";
import { CifarClient, nodeData } from "../example/example-client-app";
import { SYNTHETIC_SOURCE } from "../example/synthetic-data";
import { createFetchRestPoster } from "../supernode/fetch-rest-poster";
import { RestFleetConnection } from "../supernode/rest-connection";
import { type SuperNodeHandle, startSuperNodeOn } from "../supernode/supernode-core";
import { type StoredKey, forgetStoredKey, loadStoredKey, saveStoredKey } from "./key-store";
import { type TensorFlowBackend, initBrowserTensorFlow } from "./tensorflow-browser";

function $(id: string): HTMLElement;
function $<T extends HTMLElement>(id: string, kind: new () => T): T;
function $(id: string, kind: new () => HTMLElement = HTMLElement): HTMLElement {
  const el = document.getElementById(id);
  if (!(el instanceof kind)) throw new Error(`page element #${id} is missing`);
  return el;
}

/** What the page shows as "State"; `data-state` carries the same word for scripts and tests. */
type PageState =
  | "idle"
  | "loading"
  | "registering"
  | "connected"
  | "training"
  | "evaluating"
  | "reconnecting"
  | "stopped"
  | "refused"
  | "failed";

function setState(state: PageState, detail = ""): void {
  const el = $("state");
  el.dataset["state"] = state;
  el.textContent = detail ? `${state} — ${detail}` : state;
}

function showError(text: string): void {
  $("error").textContent = text;
}

const MAX_LOG_LINES = 300;

function logLine(text: string): void {
  const log = $("log");
  const line = document.createElement("div");
  line.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  log.append(line);
  while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild?.remove();
  log.scrollTop = log.scrollHeight;
}

/** A pino logger (its browser build) whose records become log lines and state changes. */
function pageLogger(): Logger {
  return pino({
    level: "info",
    browser: {
      asObject: true,
      write: (record: object) => {
        const r = record as { msg?: string; event?: string; nodeId?: string; level?: number | { label?: string } };
        if (r.msg) logLine(r.msg);
        switch (r.event ?? "") {
          case "supernode.ready":
          case "supernode.reregistered":
            setState("connected", "waiting for work");
            $("node-id").textContent = r.nodeId ? `(node ${r.nodeId})` : "";
            break;
          case "supernode.retry":
            setState("reconnecting", "the SuperLink is unreachable, retrying");
            break;
          case "supernode.reconnected":
            setState("connected", "waiting for work");
            break;
        }
      },
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Keys.

let currentKey: StoredKey | undefined;

async function showKey(key: StoredKey | undefined): Promise<void> {
  currentKey = key;
  if (key === undefined) {
    $("key-status").textContent = "No key yet: load an OpenSSH key pair, or generate one here.";
    $("public-line", HTMLTextAreaElement).value = "";
    $("fingerprint").textContent = "";
    return;
  }
  $("key-status").textContent =
    `Key: ${key.curve} ECDSA, ${key.origin} (kept in this browser's IndexedDB since ${key.savedAt}).`;
  $("public-line", HTMLTextAreaElement).value = openSshPublicLine(key.curve, key.point);
  $("fingerprint").textContent = `Fingerprint ${await webSshFingerprint(key.curve, key.point)}`;
}

async function keep(pair: WebKeyPair, origin: string): Promise<void> {
  await WebSuperNodeAuth.create(pair); // checks the pair before it is kept
  const key: StoredKey = { ...pair, origin, savedAt: new Date().toISOString() };
  await saveStoredKey(key);
  await showKey(key);
}

async function loadKeyFiles(): Promise<void> {
  const privateFile = $("private-key-file", HTMLInputElement).files?.[0];
  const publicFile = $("public-key-file", HTMLInputElement).files?.[0];
  if (privateFile === undefined)
    throw new InvalidKeyFileError("Choose the private key file (e.g. keys/client_credentials_1)");
  const pair = parseOpenSshPrivateText(await privateFile.text());
  if (publicFile !== undefined) {
    const pub = parseOpenSshPublicLine(await publicFile.text());
    if (pub.curve !== pair.curve || pub.point.some((b, i) => b !== pair.point[i])) {
      throw new InvalidKeyFileError(`${publicFile.name} is not the public key of ${privateFile.name}`);
    }
  }
  await keep(pair, `loaded from ${privateFile.name}${publicFile ? ` and ${publicFile.name}` : ""}`);
}

function download(name: string, text: string): void {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  a.download = name;
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
  }, 10_000);
}

// ---------------------------------------------------------------------------------------------
// The ClientApp: the example's CifarClient, reporting its progress to the page.

function metric(metrics: Record<string, unknown>, key: string): number | undefined {
  const v = metrics[key];
  return typeof v === "number" ? v : undefined;
}

const fmt = (v: number | undefined): string => (v === undefined ? "–" : v.toFixed(4));

function setCell(row: HTMLTableRowElement, index: number, text: string): void {
  const cell = row.cells.item(index);
  if (cell !== null) cell.textContent = text;
}

function roundRow(round: number): HTMLTableRowElement {
  const body = $("rounds").querySelector("tbody");
  if (body === null) throw new Error("page table #rounds has no tbody");
  let row = body.querySelector<HTMLTableRowElement>(`tr[data-round="${round}"]`);
  if (row === null) {
    row = document.createElement("tr");
    row.dataset["round"] = String(round);
    for (let i = 0; i < 5; i++) row.append(document.createElement("td"));
    setCell(row, 0, String(round));
    body.append(row);
  }
  return row;
}

let lastRound = 0;

class PageClient extends NumPyClient {
  constructor(private readonly inner: CifarClient) {
    super();
  }

  override getParameters(): NDArrays {
    return this.inner.getParameters();
  }

  override async fit(parameters: NDArrays, config: Config): Promise<FitResult> {
    const round = typeof config["server_round"] === "bigint" ? Number(config["server_round"]) : lastRound + 1;
    lastRound = round;
    $("round").textContent = String(round);
    setState("training", `round ${round}`);
    const result = await this.inner.fit(parameters, config);
    const [, , metrics] = result;
    const loss = metric(metrics, "train_loss");
    const accuracy = metric(metrics, "train_accuracy");
    $("fit-loss").textContent = fmt(loss);
    $("fit-accuracy").textContent = fmt(accuracy);
    const row = roundRow(round);
    setCell(row, 1, fmt(loss));
    setCell(row, 2, fmt(accuracy));
    setState("connected", `round ${round} trained, waiting for work`);
    // Tells the ServerApp's metrics which node ran in a page.
    return [result[0], result[1], { ...metrics, runtime: "browser" }];
  }

  override async evaluate(parameters: NDArrays): Promise<EvaluateResult> {
    setState("evaluating", `round ${lastRound}`);
    const result = await this.inner.evaluate(parameters);
    const [loss, , metrics] = result;
    const accuracy = metric(metrics, "accuracy");
    $("eval-loss").textContent = fmt(loss);
    $("eval-accuracy").textContent = fmt(accuracy);
    const row = roundRow(lastRound);
    setCell(row, 3, fmt(loss));
    setCell(row, 4, fmt(accuracy));
    setState("connected", `round ${lastRound} evaluated, waiting for work`);
    return [result[0], result[1], { ...metrics, runtime: "browser" }];
  }
}

// ---------------------------------------------------------------------------------------------
// Joining and leaving.

const params = new URLSearchParams(location.search);
let running: SuperNodeHandle | undefined;
let backendInUse: TensorFlowBackend | undefined;

function nodeConfig(): Record<string, ConfigsScalar> {
  const n = (id: string): bigint => BigInt(Math.max(0, Math.floor(Number($(id, HTMLInputElement).value) || 0)));
  return {
    "partition-id": n("partition-id"),
    "num-partitions": n("num-partitions"),
    "train-count": n("train-count"),
    "test-count": n("test-count"),
  };
}

function refusedMessage(err: unknown): string | undefined {
  if (!FlwrError.isFlwrError(err) || err.code !== "FLWR_AUTHENTICATION_FAILED") return undefined;
  return (
    "The SuperLink refused this node's key (Access denied): it is not in the SuperLink's allowlist.\n" +
    "Add the public-key line shown under “Node key” to keys/client_public_keys.csv on the SuperLink " +
    "(it reloads the file), then join again.\n" +
    `(${errorMessage(err)})`
  );
}

async function join(): Promise<void> {
  showError("");
  const key = currentKey;
  if (key === undefined) throw new InvalidKeyFileError("Load or generate a node key first");
  $("start", HTMLButtonElement).disabled = true;
  try {
    setState("loading", "TensorFlow.js");
    backendInUse ??= await initBrowserTensorFlow(params.get("backend") === "cpu" ? "cpu" : "webgl");
    $("backend").textContent =
      backendInUse === "webgl" ? "webgl (GPU)" : "cpu (pure JavaScript; this browser offers no usable WebGL)";
    const logger = pageLogger();
    const auth = await WebSuperNodeAuth.create(key);
    const superlink = $("superlink", HTMLInputElement).value.trim();
    const connection = new RestFleetConnection({
      baseUrl: superlink,
      poster: createFetchRestPoster(fetch.bind(globalThis)),
      auth,
      logger,
    });
    setState("registering", superlink);
    const app = new ClientApp({ clientFn: (context) => new PageClient(new CifarClient(nodeData(context))) });
    running = await startSuperNodeOn(connection, { app, nodeConfig: nodeConfig(), maxWaitTimeMs: 60_000 }, { logger });
  } catch (err) {
    fail(err);
    return;
  }
  $("stop", HTMLButtonElement).disabled = false;
  running.done.then(
    () => {
      setState("stopped");
    },
    (err: unknown) => {
      fail(err);
    },
  );
}

function fail(err: unknown): void {
  running = undefined;
  $("start", HTMLButtonElement).disabled = false;
  $("stop", HTMLButtonElement).disabled = true;
  const refused = refusedMessage(err);
  setState(refused !== undefined ? "refused" : "failed");
  showError(refused ?? errorMessage(err));
  logLine(`Stopped: ${errorMessage(err)}`);
}

async function leave(): Promise<void> {
  const handle = running;
  running = undefined;
  $("stop", HTMLButtonElement).disabled = true;
  await handle?.close();
  setState("stopped");
  $("start", HTMLButtonElement).disabled = false;
}

/** Runs an async UI action; a failure is shown, never unhandled. */
function action(run: () => Promise<void>): () => void {
  return () => {
    run().catch((err: unknown) => {
      showError(errorMessage(err));
    });
  };
}

function init(): void {
  $("superlink", HTMLInputElement).value = params.get("superlink") ?? location.origin;
  $("superlink-note").textContent =
    location.protocol === "https:"
      ? ""
      : "This page is not served over https: WebCrypto, and so node authentication, may be unavailable.";
  for (const id of ["partition-id", "num-partitions", "train-count", "test-count"]) {
    const v = params.get(id);
    if (v !== null) $(id, HTMLInputElement).value = v;
  }
  $("data-label").textContent =
    `Data: ${SYNTHETIC_SOURCE}, the same images the Node example SuperNodes generate for the same partition ` +
    "(a page cannot read CIFAR-10's files).";
  $("load-key").addEventListener("click", action(loadKeyFiles));
  $("generate-key").addEventListener(
    "click",
    action(async () => keep(await generateWebKeyPair(), "generated in this page")),
  );
  $("forget-key").addEventListener(
    "click",
    action(async () => {
      await forgetStoredKey();
      await showKey(undefined);
    }),
  );
  $("download-key").addEventListener("click", () => {
    if (currentKey === undefined) {
      showError("No key to download");
      return;
    }
    download("browser_credentials", openSshPrivateText(currentKey, "flwr-browser-supernode"));
    download(
      "browser_credentials.pub",
      `${openSshPublicLine(currentKey.curve, currentKey.point, "flwr-browser-supernode")}\n`,
    );
  });
  $("start").addEventListener("click", action(join));
  $("stop").addEventListener("click", action(leave));
  window.addEventListener("pagehide", () => void running?.close(1_000));
  setState("idle");
  loadStoredKey().then(showKey, (err: unknown) => {
    showError(`Cannot read the stored key: ${errorMessage(err)}`);
  });
}

/** For tests and curious users: recompute the authentication test vectors with this browser's WebCrypto. */
(globalThis as { flwrBrowserSelfTest?: unknown }).flwrBrowserSelfTest = { computeWebAuthVectors };

init();
