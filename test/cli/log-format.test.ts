/**
 * --log-format on the three daemons: text for people when stderr is a terminal (as Flower
 * prints), JSON otherwise; the flag overrides both. In-process through main(), and as real
 * processes under `script` (util-linux), which gives the child a pseudo-terminal.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import { Writable } from "node:stream";
import { resolveLogFormat } from "../../src/cli/common";
import { main as superlinkMain } from "../../src/cli/flower-superlink";
import { REPO_ROOT } from "../helpers/fixtures";
import { ensureDist } from "../faults/helpers";

jest.setTimeout(120_000);

test("resolveLogFormat: the flag wins; otherwise text on a terminal, JSON elsewhere", () => {
  expect(resolveLogFormat(undefined, true)).toBe("text");
  expect(resolveLogFormat(undefined, false)).toBe("json");
  expect(resolveLogFormat("json", true)).toBe("json");
  expect(resolveLogFormat("text", false)).toBe("text");
});

async function superlinkLines(args: string[], stderrIsTTY?: boolean): Promise<{ code: number; lines: string[] }> {
  let text = "";
  const logDestination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString("utf8");
      cb();
    },
  });
  // --fleet-api-type grpc-adapter is refused at once: a start line and a fatal line, then exit 2.
  const argv = ["node", "flower-superlink", "--insecure", "--fleet-api-type", "grpc-adapter", ...args];
  const code = await superlinkMain(argv, {
    writeOut: () => {},
    writeErr: () => {},
    logDestination,
    ...(stderrIsTTY !== undefined ? { stderrIsTTY } : {}),
  });
  return { code, lines: text.split("\n").filter((l) => l !== "") };
}

test("in-process: a terminal gets text lines, --log-format json and injected sinks get JSON", async () => {
  const tty = await superlinkLines([], true);
  expect(tty.code).toBe(2);
  expect(tty.lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d\d\d INFO {2}\[superlink\] Starting Flower SuperLink$/);
  expect(
    tty.lines.some((l) =>
      /FATAL \[superlink\] flower-superlink: --fleet-api-type grpc-adapter is not supported/.test(l),
    ),
  ).toBe(true);
  expect(tty.lines.some((l) => l.startsWith("{"))).toBe(false);

  for (const run of [await superlinkLines(["--log-format", "json"], true), await superlinkLines([])]) {
    expect(run.lines.length).toBeGreaterThan(1);
    for (const line of run.lines) expect(JSON.parse(line)).toHaveProperty("level");
  }
  const forcedText = await superlinkLines(["--log-format", "text"], false);
  expect(forcedText.lines[0]).toContain("INFO  [superlink] Starting Flower SuperLink");

  const bad = await superlinkLines(["--log-format", "yaml"]);
  expect(bad.code).toBe(2);
});

const hasScript = spawnSync("script", ["--version"]).status === 0;
const describeTty = hasScript ? describe : describe.skip;
if (!hasScript) console.warn("log-format.test.ts: `script` (util-linux) not found, skipping the pseudo-terminal tests");

/** Each daemon with flags it refuses at once (exit 2), so it prints a start/warning line and a fatal line. */
const DAEMONS: Array<[bin: string, component: string, args: string[]]> = [
  ["flower-superlink", "superlink", ["--insecure", "--fleet-api-type", "grpc-adapter"]],
  ["flower-client-app", "supernode", ["client:app", "--rest"]],
  ["flower-server-app", "serverapp", ["server:app", "--superlink", "127.0.0.1:1"]],
];

function quote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

describeTty("real processes", () => {
  beforeAll(() => ensureDist());

  test.each(DAEMONS)(
    "%s: text on a terminal, JSON through a pipe, --log-format json on a terminal",
    (bin, component, args) => {
      const command = [process.execPath, join(REPO_ROOT, "bin", bin), ...args].map(quote).join(" ");
      const onTty = (extra: string): { status: number | null; lines: string[] } => {
        const r = spawnSync("script", ["-qec", `${command}${extra}`, "/dev/null"], {
          encoding: "utf8",
          cwd: REPO_ROOT,
        });
        return { status: r.status, lines: r.stdout.split(/\r?\n/).filter((l) => l.trim() !== "") };
      };

      const text = onTty("");
      expect(text.status).toBe(2);
      expect(text.lines.length).toBeGreaterThan(0);
      for (const line of text.lines)
        expect(line).toMatch(new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} (INFO |WARN |FATAL) \\[${component}\\] `));
      expect(text.lines.some((l) => l.includes(`FATAL [${component}]`))).toBe(true);

      const json = onTty(" --log-format json");
      expect(json.status).toBe(2);
      for (const line of json.lines) expect(JSON.parse(line)).toMatchObject({ component });

      let piped = "";
      try {
        execFileSync(process.execPath, [join(REPO_ROOT, "bin", bin), ...args], {
          cwd: REPO_ROOT,
          stdio: ["ignore", "pipe", "pipe"],
        });
      } catch (err) {
        piped = String((err as { stderr?: Buffer }).stderr ?? "");
        expect((err as { status?: number }).status).toBe(2);
      }
      const pipedLines = piped.split("\n").filter((l) => l !== "");
      expect(pipedLines.length).toBeGreaterThan(0);
      for (const line of pipedLines) expect(JSON.parse(line)).toMatchObject({ component });
    },
  );
});
