/**
 * The committed src/proto must be exactly what proto/ generates (buf from npm + ts-proto, then
 * scripts/zero-copy-bytes.js and scripts/strict-decoding.js), so a .proto edit without
 * `npm run proto` fails here.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/fixtures";

function listFiles(dir: string, prefix = ""): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(join(dir, e.name), join(prefix, e.name)) : [join(prefix, e.name)],
  );
}

describe("generated protobuf code", () => {
  it("matches what proto/ generates", () => {
    const out = mkdtempSync(join(tmpdir(), "flwr-ts-proto-"));
    try {
      const buf = join(REPO_ROOT, "node_modules", ".bin", "buf");
      execFileSync(buf, ["generate", "--output", out], { cwd: REPO_ROOT, stdio: "pipe" });
      const generatedDir = join(out, "src", "proto");
      for (const script of ["zero-copy-bytes.js", "strict-decoding.js"]) {
        execFileSync(process.execPath, [join(REPO_ROOT, "scripts", script), generatedDir], { stdio: "pipe" });
      }
      const committedDir = join(REPO_ROOT, "src", "proto");
      const generated = listFiles(generatedDir).sort();
      expect(listFiles(committedDir).sort()).toEqual(generated);
      for (const f of generated) {
        expect({ file: f, text: readFileSync(join(committedDir, f), "utf8") }).toEqual({
          file: f,
          text: readFileSync(join(generatedDir, f), "utf8"),
        });
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("keeps Flower's field numbers that are easy to get wrong", () => {
    const driver = readFileSync(join(REPO_ROOT, "proto", "flwr", "proto", "driver.proto"), "utf8");
    expect(driver).toMatch(/message PushTaskInsResponse \{ repeated string task_ids = 2; \}/);
    const node = readFileSync(join(REPO_ROOT, "proto", "flwr", "proto", "node.proto"), "utf8");
    expect(node).toMatch(/sint64 node_id = 1;/);
  });
});
