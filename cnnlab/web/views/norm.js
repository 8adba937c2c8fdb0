// BatchNorm as a view of its own: its formula, then the formula with this value's numbers — the running mean
// and variance it learnt over the training batches, its ε, its learnt scale γ and shift β.
import { el, fixed } from "../api.js";
import { beforeAfter, where } from "./activation.js";
import { number } from "./board.js";

export function render(cell, ctx) {
  const spread = Math.sqrt(cell.var + cell.eps), centred = cell.before - cell.mean, z = centred / spread;
  const y = cell.weight * z + cell.bias;
  return [
    el("h2", { text: `${cell.layer} (${cell.kind}), ${where(cell, ctx)}` }),
    el("p", { text: `BatchNorm puts each ${ctx.layer.shape.length === 3 ? "map" : "unit"} on a common scale: it takes away ` +
      "the mean μ and divides by the standard deviation √(σ² + ε) that it measured over the training batches (fixed " +
      "once trained), then scales by γ and shifts by β, which it learnt." }),
    ...beforeAfter(cell, ctx),
    el("p", { class: "formula" }, "y = γ · (x − μ) / √(σ² + ε) + β"),
    el("p", { class: "formula", id: "norm-numbers" }, "  = ", number("norm-weight", "", cell.weight), " · (",
      number("norm-x", "", cell.before), " − ", number("norm-mean", "", cell.mean), ") / √(", number("norm-var", "", cell.var),
      " + ", el("span", { class: "number", id: "norm-eps", "data-value": String(cell.eps) }, el("b", { text: String(cell.eps) })),
      ") + ", number("norm-bias", "", cell.bias)),
    el("p", { class: "formula" }, `  = ${fixed(cell.weight)} · ${fixed(centred)} / ${fixed(spread)} + ${fixed(cell.bias)}` +
      ` = ${fixed(cell.weight)} · ${fixed(z)} + ${fixed(cell.bias)} = `, number("value-result", "", y)),
    el("p", {}, number("value-map", `${cell.layer} holds`, cell.value), " (the forward pass)"),
  ];
}
