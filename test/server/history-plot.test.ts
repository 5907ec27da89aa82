/**
 * historyToSvg: a well-formed SVG document (checked by Python's XML parser when python3 is
 * there, else by a tag-balance check) with one panel for the losses and one per numeric metric;
 * names are escaped; a History with nothing numeric still gives an SVG that says so. When
 * librsvg's `rsvg-convert` or ImageMagick's `convert` exists, the chart is also rendered to PNG.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { History } from "../../src/server/history";
import { historyToSvg } from "../../src/server/history-plot";

function sampleHistory(): History {
  const h = new History();
  h.addLossCentralized(0, 2.3);
  for (let round = 1; round <= 5; round++) {
    h.addLossDistributed(round, 2 / round);
    h.addLossCentralized(round, 2.1 / round);
    h.addMetricsDistributedFit(round, { train_loss: 1.5 / round, examples: BigInt(100 * round), tag: "x" });
    h.addMetricsDistributed(round, { accuracy: 0.5 + round / 12 });
    h.addMetricsCentralized(round, { "acc<&>": 0.4 + round / 10 });
  }
  return h;
}

const python = spawnSync("python3", ["--version"]).status === 0 ? "python3" : undefined;

/** Throws unless `svg` parses as XML (Python's expat), or at least has balanced tags. */
function assertWellFormed(svg: string): void {
  if (python !== undefined) {
    const r = spawnSync(
      python,
      ["-c", "import sys, xml.etree.ElementTree as ET; root = ET.fromstring(sys.stdin.buffer.read()); print(root.tag)"],
      { input: svg, encoding: "utf8" },
    );
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("{http://www.w3.org/2000/svg}svg");
    return;
  }
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
    if (m[3] === "/") continue;
    if (m[1] === "/") expect(stack.pop()).toBe(m[2]);
    else stack.push(m[2]!);
  }
  expect(stack).toEqual([]);
}

test("a panel for the losses and one per numeric metric, well-formed and escaped", () => {
  const svg = historyToSvg(sampleHistory(), "Run <1> & co");
  assertWellFormed(svg);
  expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
  for (const title of [
    "Loss",
    "train_loss (distributed, fit)",
    "examples (distributed, fit)",
    "accuracy (distributed, evaluate)",
    "acc&lt;&amp;&gt; (centralized)",
  ]) {
    expect(svg).toContain(`>${title}</text>`);
  }
  expect(svg).toContain("Run &lt;1&gt; &amp; co");
  expect(svg).not.toContain("tag (distributed, fit)"); // strings are not plotted
  // Two series in the loss panel, one in each of the 4 metric panels: 6 lines.
  expect(svg.match(/<polyline /g)).toHaveLength(6);
  expect(svg).not.toMatch(/NaN|Infinity|undefined/);
});

test("one round and a constant value still give a finite chart; an empty History says so", () => {
  const h = new History();
  h.addLossDistributed(1, 0.7);
  h.addMetricsDistributed(1, { accuracy: 1 });
  const svg = historyToSvg(h);
  assertWellFormed(svg);
  expect(svg).not.toMatch(/NaN|Infinity/);
  const empty = historyToSvg(new History());
  assertWellFormed(empty);
  expect(empty).toContain("No losses or numeric metrics were recorded.");
});

/** An SVG renderer on this machine: librsvg's rsvg-convert, or a real ImageMagick convert. */
function svgRenderer(): ((svg: string, png: string) => ReturnType<typeof spawnSync>) | undefined {
  if (spawnSync("rsvg-convert", ["--version"]).status === 0)
    return (svg, png) => spawnSync("rsvg-convert", ["-o", png, svg]);
  if (spawnSync("convert", ["-version"]).status === 0) return (svg, png) => spawnSync("convert", [svg, png]);
  return undefined;
}
const render = svgRenderer();
if (render === undefined) console.warn("history-plot.test.ts: no rsvg-convert or ImageMagick, not rendering the chart");

const testIfRenderer = render !== undefined ? test : test.skip;

testIfRenderer("an SVG renderer draws the chart", () => {
  const dir = mkdtempSync(join(tmpdir(), "flwr-ts-plot-"));
  try {
    writeFileSync(join(dir, "history.svg"), historyToSvg(sampleHistory()));
    const r = render!(join(dir, "history.svg"), join(dir, "history.png"));
    expect(String(r.stderr)).toBe("");
    expect(r.status).toBe(0);
    expect(statSync(join(dir, "history.png")).size).toBeGreaterThan(1000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
