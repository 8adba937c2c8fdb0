// A convolution's value, as CNN Explainer shows it: the kernel's window on the input map under the output cell
// you hover or choose, the products of the window and the kernel, their running sum, channel after channel, plus
// the bias where the convolution has one; then what the next layers (activation, pooling) do with the value.
import { el, fixed } from "../api.js";
import { board, figure, grid, number, sized } from "./board.js";

let inputChannel = 0;  // the input channel whose window and products are shown, kept from cell to cell

const sum = (rows) => rows.flat().reduce((a, b) => a + b, 0);

// The running totals of ``values`` added one by one.
function running(values) {
  let total = 0;
  return values.map((v) => (total += v));
}

export function render(cell, ctx) {
  const { source, layer } = ctx;
  const channels = cell.patch.length, k = [cell.kernel[0].length, cell.kernel[0][0].length];
  if (inputChannel >= channels) inputChannel = 0;
  const shown = inputChannel;
  const [, h, w] = source.layer.shape, [, oh, ow] = layer.shape;
  const [ph, pw] = cell.padding, [sh, sw] = cell.stride;
  const pad = Math.max(ph, pw);
  const top = cell.row * sh - ph, left = cell.col * sw - pw;  // the window, in the input map's coordinates

  const input = board({ values: source.values, offset: shown * h * w, h, w, pad, id: "slide-input",
    limit: ctx.limit(source.index, shown), greyscale: ctx.grey(source.index),
    marks: [{ row: top, col: left, height: k[0], width: k[1], kind: "window" }],
    label: `${source.layer.name} map ${shown}` });
  input.dataset.top = top;
  input.dataset.left = left;
  sized(input, w + 2 * pad);
  const output = board({ values: ctx.values, offset: cell.channel * oh * ow, h: oh, w: ow, id: "slide-output",
    limit: ctx.limit(ctx.index, cell.channel), marks: [{ row: cell.row, col: cell.col, kind: "cell" }],
    label: `${cell.layer} map ${cell.channel}`,
    pick: { current: ctx.chosen(), preview: (at) => ctx.preview(at && { ...at, channel: cell.channel }),
            choose: (at) => ctx.choose({ ...at, channel: cell.channel }) } });
  sized(output, ow);

  const flat = cell.products[shown].flat(), steps = running(flat);
  const channelSums = cell.products.map(sum), totals = running(channelSums);
  const parts = [
    el("h2", { text: `${cell.layer}, map ${cell.channel}, row ${cell.row}, column ${cell.col}` }),
    el("p", { text: `Filter ${cell.channel} is a ${channels}×${k[0]}×${k[1]} kernel: one ${k[0]}×${k[1]} slice per input ` +
      `channel. It lies on the input under the output cell (hover the output to slide it, click or use the arrow keys ` +
      `to keep it there); grey cells are zero padding. Multiply cell by cell, add everything up` +
      (cell.has_bias ? ", add the bias:" : ":") }),
    el("div", { class: "slide" },
      figure(input, `${source.layer.name}, input channel ${shown} of ${channels}: the window at row ${top}, column ${left}` +
        (cell.stride.some((s) => s > 1) ? ` (stride ${sh}×${sw})` : "")),
      figure(output, `${cell.layer}, map ${cell.channel}: the output cell`)),
    el("div", { class: "product-row" },
      el("span", { class: "channel", text: `input channel ${shown}` }),
      grid(cell.patch[shown], "patch", { padded: cell.padded }), el("span", { class: "op", text: "×" }),
      grid(cell.kernel[shown], "kernel"), el("span", { class: "op", text: "=" }),
      grid(cell.products[shown], "products")),
    el("p", { class: "running", id: "running", "data-running": JSON.stringify(steps) },
      `running sum of channel ${shown}'s ${flat.length} products: `,
      ...steps.flatMap((t, i) => [i ? " → " : "", el("span", { text: fixed(t) })])),
  ];
  if (channels > 1) parts.push(channelTable(channelSums, totals, shown, ctx));
  const total = cell.has_bias ? cell.sum + cell.bias : cell.sum;
  parts.push(
    el("p", { class: "sum" }, number("value-sum", `sum of all ${channels * k[0] * k[1]} products`, cell.sum),
      ...(cell.has_bias ? [" + ", number("value-bias", "bias", cell.bias)] : []), " = ", number("value-result", "", total),
      cell.has_bias ? "" : el("span", { class: "hint", text: " (this convolution has no bias)" })),
    el("p", {}, number("value-map", "the map holds", cell.value),
      ` (the forward pass; difference ${Math.abs(total - cell.value).toExponential(1)})`));
  return [...parts, ...after(cell)];
}

// Each input channel's share of the sum and the total so far; a row's button shows that channel's window.
function channelTable(sums, totals, shown, ctx) {
  const rows = sums.map((s, c) => {
    const show = el("button", { type: "button", class: "link", text: `channel ${c}` });
    show.addEventListener("click", () => { inputChannel = c; ctx.redraw(); });
    return el("tr", { class: c === shown ? "shown" : undefined, "data-channel": c, "data-sum": String(s),
      "data-total": String(totals[c]) },
      el("td", {}, show), el("td", { text: fixed(s) }), el("td", { text: fixed(totals[c]) }));
  });
  return el("div", { class: "scroll channels" }, el("table", { id: "channel-sums" },
    el("caption", { text: "The running sum, channel by channel" }),
    el("tr", {}, ...["input channel", "sum of its products", "running sum"].map((t) => el("th", { text: t }))), ...rows));
}

// What the activation (and normalisation) after the convolution, then its pooling window, do with the value.
function after(cell) {
  const parts = [];
  let current = cell.value;
  for (const step of cell.steps) {
    const says = step.kind === "ReLU" ? `max(0, ${fixed(current)})` : `${step.kind}(${fixed(current)})`;
    parts.push(el("p", { class: "step" }, `${step.name} (${step.kind}): ${says} = `, el("b", { text: fixed(step.value) })));
    current = step.value;
  }
  if (cell.pool) {
    const p = cell.pool, size = `${p.values.length}×${p.values[0].length}`;
    const what = p.kind.includes("Max") ? "keeps the largest" : "takes the mean";
    parts.push(el("div", { class: "product-row" }, grid(p.values, "pool", { marked: [cell.row - p.top, cell.col - p.left] }),
      el("p", {}, `${p.name} ${what} of its ${size} window (this pixel outlined): `, el("b", { text: fixed(p.value) }),
        `, at row ${p.position[0]}, column ${p.position[1]} of its map.`)));
  }
  return parts;
}
