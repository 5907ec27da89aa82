/**
 * The History as a standalone SVG chart (`flower-server-app --history-plot FILE`): one panel
 * for the losses (distributed and centralized) and one per numeric metric, value against round.
 * Hand-written SVG 1.1 with no scripts or external references, so any browser or viewer opens it.
 */
import type { History, MetricsHistory } from "./history";

/** One line of a panel: a name and its (round, value) points. */
interface Series {
  name: string;
  points: Array<[number, number]>;
}

interface Panel {
  title: string;
  series: Series[];
}

const PANEL_WIDTH = 460;
const PANEL_HEIGHT = 280;
const COLUMNS = 2;
const MARGIN = { left: 64, right: 16, top: 36, bottom: 64 };
const INSET = 10;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/** Escapes text for SVG element content and attribute values. */
function xml(text: string): string {
  return text.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
}

/** Numeric points of a metric series; bigint as a number, booleans/strings/bytes skipped. */
function numericPoints(series: Array<[number, unknown]>): Array<[number, number]> {
  const points: Array<[number, number]> = [];
  for (const [round, value] of series) {
    const n = typeof value === "bigint" ? Number(value) : typeof value === "number" ? value : NaN;
    if (Number.isFinite(n)) points.push([round, n]);
  }
  return points;
}

function metricPanels(metrics: MetricsHistory, origin: string): Panel[] {
  const panels: Panel[] = [];
  for (const name of [...metrics.keys()].sort()) {
    const points = numericPoints(metrics.get(name)!);
    if (points.length > 0) panels.push({ title: `${name} (${origin})`, series: [{ name, points }] });
  }
  return panels;
}

/** The panels the chart shows, in History order; empty when nothing numeric was recorded. */
function panelsOf(history: History): Panel[] {
  const losses: Series[] = [];
  if (history.lossesDistributed.length > 0)
    losses.push({ name: "loss, distributed (evaluate)", points: [...history.lossesDistributed] });
  if (history.lossesCentralized.length > 0)
    losses.push({ name: "loss, centralized", points: [...history.lossesCentralized] });
  const panels: Panel[] = losses.length > 0 ? [{ title: "Loss", series: losses }] : [];
  panels.push(...metricPanels(history.metricsDistributedFit, "distributed, fit"));
  panels.push(...metricPanels(history.metricsDistributed, "distributed, evaluate"));
  panels.push(...metricPanels(history.metricsCentralized, "centralized"));
  return panels;
}

/** Round tick values: every round when few, else about 8 evenly spaced integers. */
function roundTicks(min: number, max: number): number[] {
  const step = Math.max(1, Math.ceil((max - min) / 8));
  const ticks: number[] = [];
  for (let r = min; r <= max; r += step) ticks.push(r);
  return ticks;
}

/** A short label for an axis value. */
function tickLabel(value: number): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-3) return value.toExponential(1);
  return String(Number(value.toPrecision(3)));
}

function renderPanel(panel: Panel, x0: number, y0: number): string {
  const all = panel.series.flatMap((s) => s.points);
  const rounds = all.map(([r]) => r);
  const values = all.map(([, v]) => v);
  const rMin = Math.min(...rounds);
  const rMax = Math.max(...rounds);
  let vMin = Math.min(...values);
  let vMax = Math.max(...values);
  if (vMin === vMax) {
    const pad = vMin === 0 ? 1 : Math.abs(vMin) * 0.1;
    vMin -= pad;
    vMax += pad;
  }
  const plotW = PANEL_WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  // Points stay INSET px inside the frame, so the first and last ones are not cut by it.
  const px = (r: number): number =>
    x0 +
    MARGIN.left +
    INSET +
    (rMax === rMin ? (plotW - 2 * INSET) / 2 : ((r - rMin) / (rMax - rMin)) * (plotW - 2 * INSET));
  const py = (v: number): number =>
    y0 + MARGIN.top + plotH - INSET - ((v - vMin) / (vMax - vMin)) * (plotH - 2 * INSET);
  const f = (n: number): string => n.toFixed(1);

  const out: string[] = [];
  out.push(`<g>`);
  out.push(
    `<text x="${f(x0 + PANEL_WIDTH / 2)}" y="${f(y0 + 22)}" text-anchor="middle" font-size="14" font-weight="bold">${xml(panel.title)}</text>`,
  );
  out.push(
    `<rect x="${f(x0 + MARGIN.left)}" y="${f(y0 + MARGIN.top)}" width="${f(plotW)}" height="${f(plotH)}" fill="none" stroke="#999" stroke-width="1"/>`,
  );
  for (let i = 0; i <= 4; i++) {
    const v = vMin + ((vMax - vMin) * i) / 4;
    const y = py(v);
    out.push(
      `<line x1="${f(x0 + MARGIN.left)}" y1="${f(y)}" x2="${f(x0 + MARGIN.left + plotW)}" y2="${f(y)}" stroke="#e5e5e5" stroke-width="1"/>`,
    );
    out.push(
      `<text x="${f(x0 + MARGIN.left - 6)}" y="${f(y + 4)}" text-anchor="end" font-size="11">${xml(tickLabel(v))}</text>`,
    );
  }
  for (const r of roundTicks(rMin, rMax)) {
    const x = px(r);
    out.push(
      `<line x1="${f(x)}" y1="${f(y0 + MARGIN.top + plotH)}" x2="${f(x)}" y2="${f(y0 + MARGIN.top + plotH + 4)}" stroke="#999" stroke-width="1"/>`,
    );
    out.push(
      `<text x="${f(x)}" y="${f(y0 + MARGIN.top + plotH + 17)}" text-anchor="middle" font-size="11">${r}</text>`,
    );
  }
  out.push(
    `<text x="${f(x0 + MARGIN.left + plotW / 2)}" y="${f(y0 + MARGIN.top + plotH + 32)}" text-anchor="middle" font-size="11">round</text>`,
  );
  panel.series.forEach((series, i) => {
    const color = COLORS[i % COLORS.length]!;
    const points = series.points.map(([r, v]) => `${f(px(r))},${f(py(v))}`).join(" ");
    out.push(`<polyline points="${points}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const [r, v] of series.points) out.push(`<circle cx="${f(px(r))}" cy="${f(py(v))}" r="3" fill="${color}"/>`);
    const ly = y0 + PANEL_HEIGHT - 12;
    const lx = x0 + MARGIN.left + i * 200;
    out.push(
      `<line x1="${f(lx)}" y1="${f(ly - 4)}" x2="${f(lx + 18)}" y2="${f(ly - 4)}" stroke="${color}" stroke-width="2"/>`,
    );
    out.push(`<text x="${f(lx + 24)}" y="${f(ly)}" font-size="11">${xml(series.name)}</text>`);
  });
  out.push(`</g>`);
  return out.join("\n");
}

/**
 * The chart as an SVG document. A History with nothing numeric (e.g. a `main` app) gives a
 * small SVG that says so, so the file always opens.
 */
export function historyToSvg(history: History, title = "Flower run history"): string {
  const panels = panelsOf(history);
  const rows = Math.max(1, Math.ceil(panels.length / COLUMNS));
  const width = COLUMNS * PANEL_WIDTH;
  const height = 40 + rows * PANEL_HEIGHT;
  const body =
    panels.length === 0
      ? `<text x="${width / 2}" y="${40 + PANEL_HEIGHT / 2}" text-anchor="middle" font-size="14">No losses or numeric metrics were recorded.</text>`
      : panels
          .map((p, i) => renderPanel(p, (i % COLUMNS) * PANEL_WIDTH, 40 + Math.floor(i / COLUMNS) * PANEL_HEIGHT))
          .join("\n");
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n` +
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>\n` +
    `<text x="${width / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold">${xml(title)}</text>\n` +
    `${body}\n</svg>\n`
  );
}
