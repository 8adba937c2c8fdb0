// Pooling as a view of its own: the window on the map before, the value it keeps (max) or makes (mean) on the
// map after; hover the map after, or use the arrow keys, to move the window.
import { el, fixed } from "../api.js";
import { board, figure, grid, number, sized } from "./board.js";

const TABLE = 8;  // the window's numbers are listed up to 8×8

export function render(cell, ctx) {
  const [, h, w] = ctx.source.layer.shape, [, oh, ow] = ctx.layer.shape;
  const [wh, ww] = [cell.window.length, cell.window[0].length];
  const pad = Math.max(0, -cell.top, -cell.left, cell.top + wh - h, cell.left + ww - w);
  const real = cell.window.flatMap((row, r) => row.filter((_, c) => !cell.padded[r][c]));
  const max = cell.kind.includes("Max");
  const kept = max ? Math.max(...real) : real.reduce((a, b) => a + b, 0) / (cell.include_padding ? wh * ww : real.length);
  const at = cell.window.flatMap((row, r) => row.map((v, c) => [v, r, c])).find(([v, r, c]) => !cell.padded[r][c] && v === kept);
  const before = board({ values: ctx.source.values, offset: cell.channel * h * w, h, w, pad, id: "pool-input",
    limit: ctx.limit(ctx.source.index, cell.channel), label: `${cell.source} map ${cell.channel}`,
    marks: [{ row: cell.top, col: cell.left, height: wh, width: ww, kind: "window" }] });
  before.dataset.top = cell.top;
  before.dataset.left = cell.left;
  const afterward = board({ values: ctx.values, offset: cell.channel * oh * ow, h: oh, w: ow, id: "pool-output",
    limit: ctx.limit(ctx.index, cell.channel), marks: [{ row: cell.row, col: cell.col, kind: "cell" }],
    label: `${cell.layer} map ${cell.channel}`,
    pick: { current: ctx.chosen(), preview: (p) => ctx.preview(p && { ...p, channel: cell.channel }),
            choose: (p) => ctx.choose({ ...p, channel: cell.channel }) } });
  sized(before, w + 2 * pad);
  sized(afterward, ow, 100);
  const what = max ? "keeps the largest value" : "takes the mean";
  return [
    el("h2", { text: `${cell.layer} (${cell.kind}), map ${cell.channel}, row ${cell.row}, column ${cell.col}` }),
    el("p", { text: `${cell.layer} ${what} of each ${wh}×${ww} window of ${cell.source}'s map: a smaller map that still ` +
      "says where each pattern was found, give or take a window." }),
    el("div", { class: "slide" },
      figure(before, `before: ${cell.source}, map ${cell.channel}, the window at row ${cell.top}, column ${cell.left}`),
      figure(afterward, `after: ${cell.layer}, map ${cell.channel} (hover, click or arrow keys)`)),
    wh <= TABLE && ww <= TABLE
      ? el("div", { class: "product-row" }, grid(cell.window, "window", { padded: cell.padded, marked: max && at ? [at[1], at[2]] : null }),
        el("span", { class: "op", text: "→" }), el("span", { class: "kept" }, number("value-result", "", kept)))
      : "",
    el("p", { class: "sum" },
      `${max ? "max" : "mean"} of the ${max || !cell.include_padding ? real.length : wh * ww} values in the window` +
      `${max && at ? ` (row ${cell.top + at[1]}, column ${cell.left + at[2]}, outlined)` : ""} = `, el("b", { text: fixed(kept) })),
    el("p", {}, number("value-map", `${cell.layer} holds`, cell.value), " (the forward pass)"),
  ];
}
