import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(__dirname, "..", "..");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === "proto" ? [] : sourceFiles(path);
    return name.endsWith(".ts") ? [path] : [];
  });
}

test("docs/errors.md documents exactly the FLWR_* codes the source uses", () => {
  const inSource = new Set<string>();
  for (const file of sourceFiles(join(ROOT, "src"))) {
    for (const match of readFileSync(file, "utf8").matchAll(/"(FLWR_[A-Z_]+)"/g)) inSource.add(match[1]!);
  }
  const documented = new Set(
    [...readFileSync(join(ROOT, "docs", "errors.md"), "utf8").matchAll(/^## (FLWR_[A-Z_]+)$/gm)].map((m) => m[1]!),
  );
  expect(inSource.size).toBeGreaterThan(5);
  expect([...documented].sort()).toEqual([...inSource].sort());
});
