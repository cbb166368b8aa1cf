// A stacked bar chart in SVG, built with DOM calls (no library, no innerHTML).
import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b6fd8", "#e07b39", "#3aa57a", "#b5496b", "#8a6dd1", "#c9a227", "#4a9fb5"];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

/**
 * bars: [{label, parts: {series: value}}]; returns a <figure> with the chart and a legend.
 */
export function stackedBars(title, bars, { format = (v) => String(v) } = {}) {
  const series = [...new Set(bars.flatMap((b) => Object.keys(b.parts)))].sort();
  const colour = Object.fromEntries(series.map((name, i) => [name, PALETTE[i % PALETTE.length]]));
  const max = Math.max(1e-9, ...bars.map((b) => Object.values(b.parts).reduce((a, v) => a + v, 0)));
  const width = Math.max(320, bars.length * 48 + 60);
  const height = 220;
  const plot = { left: 50, top: 10, bottom: 40, height: height - 50 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  svg.append(s("title", {}, title));
  svg.append(s("line", { x1: plot.left, y1: plot.top + plot.height, x2: width, y2: plot.top + plot.height, class: "axis" }));
  svg.append(s("text", { x: plot.left - 6, y: plot.top + 10, "text-anchor": "end", class: "tick" }, format(max)));
  svg.append(s("text", { x: plot.left - 6, y: plot.top + plot.height, "text-anchor": "end", class: "tick" }, "0"));
  bars.forEach((bar, i) => {
    const x = plot.left + 10 + i * 48;
    let y = plot.top + plot.height;
    for (const name of series) {
      const value = bar.parts[name] || 0;
      if (!value) continue;
      const barHeight = (value / max) * plot.height;
      y -= barHeight;
      const rect = s("rect", { x, y, width: 32, height: barHeight, fill: colour[name] });
      rect.append(s("title", {}, `${bar.label} ${name}: ${format(value)}`));
      svg.append(rect);
    }
    svg.append(s("text", { x: x + 16, y: height - 22, "text-anchor": "middle", class: "tick" }, bar.label.slice(5)));
  });
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((name) => h("li", {}, h("span", { class: "swatch", dataset: { colour: colour[name] } }), name)),
  );
  // Swatch colours are set as properties, not inline style attributes (CSP forbids those).
  legend.querySelectorAll(".swatch").forEach((el) => el.style.setProperty("background", el.dataset.colour));
  return h("figure", { class: "chart" }, h("figcaption", {}, title), svg, legend);
}
