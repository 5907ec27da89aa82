/**
 * The status page on `/` of the SuperLink's metrics address: one static HTML document with its
 * CSS and JavaScript inline (no CDN, nothing fetched but `/status.json` from the same origin).
 * The script polls `/status.json` every POLL_MS and shows nodes online, runs with their latest
 * round (group id) and task counts, the stored tasks, RPCs by method, and a line chart of RPCs
 * and tasks per second over the last CHART_POINTS polls.
 *
 * Everything that comes from state (node ids, FAB ids, group ids, method names) is put in the
 * page as text (`textContent`), never as markup; the Content-Security-Policy admits only this
 * page's own script and style (by hash) and connections to its own origin.
 */
import { createHash } from "node:crypto";

/** How often the page polls /status.json. */
export const STATUS_POLL_MS = 1000;
/** Samples the chart keeps. */
export const STATUS_CHART_POINTS = 60;

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.6em; }
table { border-collapse: collapse; background: #fff; } td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
#chart { background: #fff; border: 1px solid #ddd; border-radius: 6px; }
.rpc { stroke: #1f77b4; } .tasks { stroke: #d62728; } polyline { fill: none; stroke-width: 2; }
.legend span { margin-right: 1.5em; } .muted { color: #777; } #error { color: #b00; }
`;

const SCRIPT = `
"use strict";
(function () {
  var POLL_MS = ${STATUS_POLL_MS}, POINTS = ${STATUS_CHART_POINTS}, W = 600, H = 160;
  var samples = [];
  var previous = null;
  function el(id) { return document.getElementById(id); }
  function text(id, value) { el(id).textContent = String(value); }
  function cell(row, value) { var td = document.createElement("td"); td.textContent = String(value); row.appendChild(td); }
  function fillTable(id, rows, columns) {
    var body = el(id);
    while (body.firstChild) body.removeChild(body.firstChild);
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      columns.forEach(function (c) { cell(tr, c(r)); });
      body.appendChild(tr);
    });
  }
  function draw() {
    var max = 1;
    samples.forEach(function (s) { max = Math.max(max, s.rpc, s.tasks); });
    function line(key) {
      return samples.map(function (s, i) {
        var x = samples.length < 2 ? 0 : (i * W) / (POINTS - 1);
        var y = H - (s[key] / max) * (H - 10);
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
    }
    el("rpc-line").setAttribute("points", line("rpc"));
    el("tasks-line").setAttribute("points", line("tasks"));
    el("chart").setAttribute("data-points", String(samples.length));
    text("chart-max", max.toFixed(1) + "/s");
    var last = samples[samples.length - 1];
    if (last) { text("rpc-rate", last.rpc.toFixed(1)); text("tasks-rate", last.tasks.toFixed(1)); }
  }
  function show(s) {
    text("nodes-online", s.nodesOnline);
    text("runs-created", s.runsCreated);
    text("task-ins-stored", s.taskInsStored);
    text("task-res-stored", s.taskResStored);
    text("long-polls", s.longPollsWaiting);
    text("uptime", Math.round((s.time - s.startedAt) / 1000) + " s");
    fillTable("nodes", s.nodes, [function (n) { return n.nodeId; }, function (n) { return Math.max(0, Math.round((n.onlineUntil - s.time) / 1000)) + " s"; }]);
    fillTable("runs", s.runs, [
      function (r) { return r.runId; }, function (r) { return r.fabId + (r.fabVersion ? " " + r.fabVersion : ""); },
      function (r) { return r.lastGroupId || "-"; }, function (r) { return r.taskInsPushed; }, function (r) { return r.taskResPushed; },
    ]);
    fillTable("rpcs", s.rpcs, [function (r) { return r.method; }, function (r) { return r.code; }, function (r) { return r.count; }]);
    if (previous !== null && s.time > previous.time) {
      var seconds = (s.time - previous.time) / 1000;
      samples.push({
        rpc: Math.max(0, s.rpcsTotal - previous.rpcsTotal) / seconds,
        tasks: Math.max(0, s.taskInsPushedTotal + s.taskResPushedTotal - previous.taskInsPushedTotal - previous.taskResPushedTotal) / seconds,
      });
      if (samples.length > POINTS) samples.shift();
      draw();
    }
    previous = s;
  }
  function poll() {
    fetch("status.json", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (s) { text("error", ""); show(s); text("updated", new Date(s.time).toLocaleTimeString()); })
      .catch(function (e) { text("error", "status.json: " + e.message); })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
`;

const sha256 = (source: string): string => `'sha256-${createHash("sha256").update(source, "utf8").digest("base64")}'`;

/** The page (static: no value from state is in it). */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flower SuperLink status</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Flower SuperLink</h1>
<div class="muted">up <span id="uptime">-</span>, updated <span id="updated">-</span> <span id="error"></span></div>
<div class="cards">
<div class="card">nodes online<b id="nodes-online">-</b></div>
<div class="card">runs created<b id="runs-created">-</b></div>
<div class="card">TaskIns stored<b id="task-ins-stored">-</b></div>
<div class="card">TaskRes stored<b id="task-res-stored">-</b></div>
<div class="card">pulls waiting<b id="long-polls">-</b></div>
</div>
<h2>Activity (last ${STATUS_CHART_POINTS} s, peak <span id="chart-max">-</span>)</h2>
<svg id="chart" data-points="0" width="600" height="160" viewBox="0 0 600 160" role="img" aria-label="RPCs and tasks per second">
<polyline id="rpc-line" class="rpc" points=""></polyline>
<polyline id="tasks-line" class="tasks" points=""></polyline>
</svg>
<div class="legend"><span class="rpc-label">RPCs/s: <b id="rpc-rate">-</b></span><span>tasks/s (TaskIns + TaskRes pushed): <b id="tasks-rate">-</b></span></div>
<h2>Runs (rounds are the latest TaskIns group id)</h2>
<table><thead><tr><th>run</th><th>FAB</th><th>round</th><th>TaskIns pushed</th><th>TaskRes pushed</th></tr></thead><tbody id="runs"></tbody></table>
<h2>Nodes online</h2>
<table><thead><tr><th>node id</th><th>online for</th></tr></thead><tbody id="nodes"></tbody></table>
<h2>RPCs</h2>
<table><thead><tr><th>method</th><th>code</th><th>count</th></tr></thead><tbody id="rpcs"></tbody></table>
<p class="muted">Prometheus metrics: <a href="metrics">/metrics</a>, this page's data: <a href="status.json">/status.json</a></p>
<script>${SCRIPT}</script>
</body>
</html>
`;

/** Headers of the page: only its own inline script and style run, and it talks only to its origin. */
export const STATUS_PAGE_HEADERS: Record<string, string> = {
  "content-security-policy":
    `default-src 'none'; script-src ${sha256(SCRIPT)}; style-src ${sha256(STYLE)}; connect-src 'self'; ` +
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
};
