// Flatten explained: the maps are laid end to end, row after row, map after map, into one vector; element i
// comes from map c, row r, column x with i = c·H·W + r·W + x. Hover a map's pixel to find its place.
import { el } from "../api.js";
import { board, figure, number, sized } from "./board.js";
import { paint } from "../heat.js";

export function render(cell, ctx) {
  const shape = ctx.source.layer.shape, n = ctx.layer.shape[0];
  const parts = [el("h2", { text: `${cell.layer} (Flatten), element ${cell.channel} of ${n}` })];
  if (shape.length !== 3) return [...parts, el("p", {}, number("value-map", `${cell.layer} holds`, cell.value))];
  const [c, r, x] = cell.from, [C, H, W] = shape;
  const map = board({ values: ctx.source.values, offset: c * H * W, h: H, w: W, id: "flat-map",
    limit: ctx.limit(ctx.source.index, c), marks: [{ row: r, col: x, kind: "cell" }], label: `${cell.source} map ${c}`,
    pick: { current: { row: r, col: x }, preview: (p) => ctx.preview(p && { channel: c * H * W + p.row * W + p.col }),
            choose: (p) => ctx.choose({ channel: c * H * W + p.row * W + p.col }) } });
  sized(map, W);
  const strip = el("canvas", { class: "vector strip" });
  paint(strip, ctx.values, 0, 1, n, ctx.limit(ctx.index, 0));
  const vector = el("div", { class: "board strip-box" }, strip,
    el("i", { class: "mark cell", style: `left:${100 * cell.channel / n}%;top:0;width:max(3px, ${100 / n}%);height:100%` }));
  return [...parts,
    el("p", { text: `A dense layer takes a vector, so ${cell.layer} lays ${cell.source}'s ${C} maps of ${H}×${W} end to end: ` +
      `map 0's first row, its second row, …, then map 1, and so on — ${C}·${H}·${W} = ${n} numbers. Nothing is computed; ` +
      "each number only gets a new place. Hover or click a pixel of the map to find it in the vector." }),
    el("div", { class: "slide" }, figure(map, `${cell.source}, map ${c} (hover, click or arrow keys)`)),
    figure(vector, `${cell.layer}: ${n} numbers, element ${cell.channel} marked`),
    el("p", { class: "formula", id: "flat-index", "data-from": JSON.stringify(cell.from) },
      `element = map · ${H}·${W} + row · ${W} + column = ${c} · ${H * W} + ${r} · ${W} + ${x} = `,
      el("b", { text: String(cell.channel) })),
    el("p", {}, number("value-before", `${cell.source} holds at map ${c}, row ${r}, column ${x}`, cell.before), "; ",
      number("value-map", `${cell.layer}'s element ${cell.channel}`, cell.value)),
  ];
}
