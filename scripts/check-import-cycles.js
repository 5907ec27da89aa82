#!/usr/bin/env node
// No import cycles in src/, type-only imports included (keep the graph simple). The rest of the
// module rules (which folder may import which, process APIs only in src/cli/, no focused tests)
// are ESLint's: eslint.config.mjs. Exits 1 and lists every cycle.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const src = path.join(root, "src");

function walk(dir, out = []) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(p, out);
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

const importRe =
  /(?:import|export)\s[^"';]*?from\s*["']([^"']+)["']|require\(\s*["']([^"']+)["']\s*\)|import\(\s*["']([^"']+)["']\s*\)/g;

const files = walk(src);
const graph = new Map();
for (const file of files) {
  const deps = [];
  for (const m of fs.readFileSync(file, "utf8").matchAll(importRe)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!spec.startsWith(".")) continue;
    const target = path.resolve(path.dirname(file), spec.replace(/\.js$/, ""));
    const resolved = [target + ".ts", path.join(target, "index.ts")].find((p) => fs.existsSync(p));
    if (resolved) deps.push(resolved);
  }
  graph.set(file, deps);
}

const cycles = [];
const state = new Map(); // 1 = on the stack, 2 = done
function visit(f, stack) {
  state.set(f, 1);
  stack.push(f);
  for (const d of graph.get(f) ?? []) {
    if (state.get(d) === 1) {
      const cycle = stack
        .slice(stack.indexOf(d))
        .concat(d)
        .map((p) => path.relative(root, p));
      cycles.push(`import cycle: ${cycle.join(" -> ")}`);
    } else if (!state.has(d)) visit(d, stack);
  }
  stack.pop();
  state.set(f, 2);
}
for (const f of files) if (!state.has(f)) visit(f, []);

if (cycles.length) {
  console.error(`check-import-cycles: ${cycles.length} cycle(s)`);
  for (const c of cycles) console.error("  " + c);
  process.exitCode = 1;
} else {
  console.log(`check-import-cycles: ${files.length} files, no cycles`);
}
