// A value-by-value layer as a view of its own — ReLU, GELU, Dropout, a fixed scale: the map before and after it
// with the same cell marked, the function with its numbers, and (ReLU, GELU) its curve with the point on it.
import { el, fixed } from "../api.js";
import { board, figure, number, sized } from "./board.js";

const erf = (x) => {  // Abramowitz and Stegun 7.1.26, within 1.5e-7: enough for a curve and 4 decimals
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return x >= 0 ? y : -y;
};
const FUNCTIONS = {
  ReLU: { f: (x) => Math.max(0, x), says: (x) => `max(0, ${fixed(x)})`,
    text: "ReLU keeps a positive value and makes a negative one 0: the map keeps only where the filter found its pattern." },
  GELU: { f: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)), says: (x) => `${fixed(x)} · Φ(${fixed(x)})`,
    text: "GELU multiplies a value by Φ(value), the chance that a standard normal variable is below it: a smooth ReLU." },
  Dropout: { f: (x) => x, says: (x) => fixed(x),
    text: "Dropout zeroes a random share of the values while training; when the network predicts, it passes every value through." },
  Mul: { f: (x, cell) => x * cell.scale, says: (x, cell) => `${fixed(x)} × ${fixed(cell.scale)}`,
    text: "This layer multiplies every value by a fixed number." },
};

// The map before and after the layer, the cell marked on both (the one after can be hovered and chosen), and
// ``more`` beside them.
export function beforeAfter(cell, ctx, ...more) {
  if (ctx.layer.shape.length !== 3) return more.length ? [el("div", { class: "slide" }, ...more)] : [];
  const [, h, w] = ctx.layer.shape, [sourceChannels] = ctx.source.layer.shape;
  const mark = [{ row: cell.row, col: cell.col, kind: "cell" }];
  const before = board({ values: ctx.source.values, offset: cell.channel * h * w, h, w, marks: mark, id: "before",
    limit: ctx.limit(ctx.source.index, cell.channel), greyscale: ctx.grey(ctx.source.index),
    label: `${cell.source} map ${cell.channel}` });
  const afterward = board({ values: ctx.values, offset: cell.channel * h * w, h, w, marks: mark, id: "after",
    limit: ctx.limit(ctx.index, cell.channel), label: `${cell.layer} map ${cell.channel}`,
    pick: { current: ctx.chosen(), preview: (at) => ctx.preview(at && { ...at, channel: cell.channel }),
            choose: (at) => ctx.choose({ ...at, channel: cell.channel }) } });
  for (const b of [before, afterward]) sized(b, w);
  if (sourceChannels !== ctx.layer.shape[0]) return [];
  return [el("div", { class: "slide" }, figure(before, `before: ${cell.source}, map ${cell.channel}`),
    figure(afterward, `after: ${cell.layer}, map ${cell.channel} (hover, click or arrow keys)`), ...more)];
}

export function where(cell, ctx) {
  return ctx.layer.shape.length === 3 ? `map ${cell.channel}, row ${cell.row}, column ${cell.col}` : `unit ${cell.channel}`;
}

export function render(cell, ctx) {
  const fn = FUNCTIONS[cell.kind];
  const drawn = cell.kind === "ReLU" || cell.kind === "GELU" ? [curve(fn.f, cell.before, cell.value, cell.kind)] : [];
  return [
    el("h2", { text: `${cell.layer} (${cell.kind}), ${where(cell, ctx)}` }),
    el("p", { text: fn.text }),
    ...beforeAfter(cell, ctx, ...drawn),
    el("p", { class: "sum" }, `${cell.kind}: ${fn.says(cell.before, cell)} = `,
      number("value-result", "", fn.f(cell.before, cell))),
    el("p", {}, number("value-before", `${cell.source} gave`, cell.before), "; ", number("value-map", `${cell.layer} holds`, cell.value),
      " (the forward pass)"),
  ];
}

// y = f(x) over a range around x, the point (x, f(x)) on it.
function curve(f, x, y, name) {
  const [W, H] = [220, 130], reach = Math.max(1, Math.abs(x) * 1.3);
  const canvas = el("canvas", { class: "curve", width: W, height: H, role: "img", "aria-label": `${name}(x): the point x = ${fixed(x)}` });
  const g = canvas.getContext("2d");
  const X = (v) => (v + reach) / (2 * reach) * (W - 20) + 10, Y = (v) => H - 12 - (v + reach * 0.25) / (reach * 1.25) * (H - 24);
  g.strokeStyle = "#8a90a0"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(0, Y(0)); g.lineTo(W, Y(0)); g.moveTo(X(0), 0); g.lineTo(X(0), H); g.stroke();
  g.strokeStyle = "#1d2330"; g.lineWidth = 2; g.beginPath();
  for (let i = 0; i <= 100; i++) { const v = -reach + 2 * reach * i / 100; (i ? g.lineTo : g.moveTo).call(g, X(v), Y(f(v))); }
  g.stroke();
  g.fillStyle = "#c2410c"; g.beginPath(); g.arc(X(x), Y(y), 5, 0, 2 * Math.PI); g.fill();
  g.fillStyle = "#1d2330"; g.font = "12px system-ui, sans-serif";
  g.fillText(`${name}(x)`, 8, 14);
  return figure(canvas, `${name}: x = ${fixed(x)} gives ${fixed(y)}`);
}
