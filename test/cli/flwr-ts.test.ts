/** `flwr-ts new NAME` in-process: the files it writes, and what it refuses (exit 2). */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../../src/cli/flwr-ts";

let parent: string;
beforeEach(() => {
  parent = mkdtempSync(join(tmpdir(), "flwr-ts-new-"));
});
afterEach(() => {
  rmSync(parent, { recursive: true, force: true });
});

async function flwrTs(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(["node", "flwr-ts", ...args], { writeOut: (s) => (out += s), writeErr: (s) => (err += s) });
  return { code, out, err };
}

test("new NAME writes a runnable app folder with the names filled in", async () => {
  const { code, out } = await flwrTs("new", "my-app", "--dir", parent);
  expect(code).toBe(0);
  const dir = join(parent, "my-app");
  expect(readdirSync(dir).sort()).toEqual([
    ".gitignore",
    "README.md",
    "client.ts",
    "package.json",
    "server.ts",
    "task.ts",
    "tsconfig.json",
  ]);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {
    name: string;
    dependencies: Record<string, string>;
  };
  const ours = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")) as { version: string };
  expect(pkg.name).toBe("my-app");
  expect(pkg.dependencies["flwr-ts"]).toBe(`^${ours.version}`);
  expect(readFileSync(join(dir, "README.md"), "utf8")).toMatch(/^# my-app\n/);
  expect(readdirSync(dir).join(" ")).not.toContain("{{");
  expect(readFileSync(join(dir, "client.ts"), "utf8")).toContain("NumPyFitResult");
  expect(out).toContain("npm install");
});

test("refuses a name npm would not accept and a folder that is not empty", async () => {
  const bad = await flwrTs("new", "My App", "--dir", parent);
  expect(bad.code).toBe(2);
  expect(bad.err).toContain('Invalid app name "My App"');
  expect(existsSync(join(parent, "My App"))).toBe(false);

  mkdirSync(join(parent, "taken"));
  writeFileSync(join(parent, "taken", "notes.txt"), "mine");
  const taken = await flwrTs("new", "taken", "--dir", parent);
  expect(taken.code).toBe(2);
  expect(taken.err).toContain("already exists and is not empty");
  expect(readdirSync(join(parent, "taken"))).toEqual(["notes.txt"]);
});

test("without a command it prints the help and exits 2; --version exits 0", async () => {
  const none = await flwrTs();
  expect(none.code).toBe(2);
  expect(none.err).toContain("new [options] <name>");
  expect((await flwrTs("--version")).code).toBe(0);
});
