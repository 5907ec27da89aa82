/** The browser SuperNode's files as --rest-serve-browser-client loads them (src/superlink/fleet/browser-client.ts). */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadBrowserClientFiles } from "../../src/superlink/fleet/browser-client";

test("serves index.html at / and the bundle; a missing file says to run npm run build", () => {
  const dir = mkdtempSync(join(tmpdir(), "flwr-browser-client-"));
  try {
    expect(() => loadBrowserClientFiles(dir)).toThrow(/index\.html.*npm run build/);
    writeFileSync(join(dir, "index.html"), "<!doctype html>");
    writeFileSync(join(dir, "flwr-browser.js"), "void 0;");
    const files = loadBrowserClientFiles(dir);
    expect([...files.keys()].sort()).toEqual(["/", "/flwr-browser.js", "/index.html"]);
    expect(files.get("/")?.contentType).toMatch(/^text\/html/);
    expect(files.get("/flwr-browser.js")?.body.toString()).toBe("void 0;");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
