// A dense (Linear) unit: the weighted sum of every input plus its bias, with the terms that weigh most.
import { el, fixed } from "../api.js";
import { number } from "./board.js";

export function render(cell, ctx) {
  const classes = ctx.output ? ctx.classes : null;
  const who = classes ? `the logit of “${classes[cell.channel]}”` : `unit ${cell.channel}`;
  const total = cell.has_bias ? cell.sum + cell.bias : cell.sum;
  return [
    el("h2", { text: `${cell.layer} (Dense), ${who}` }),
    el("p", { text: `Each unit of a dense layer weighs all ${cell.count} numbers of ${cell.source} — one weight per number — ` +
      `and adds them up${cell.has_bias ? ", plus its bias" : ""}. The terms that weigh most here:` }),
    el("div", { class: "scroll" }, el("table", { id: "dense-terms" },
      el("tr", {}, ...[`${cell.source} element`, "value", "× weight", "= term"].map((t) => el("th", { text: t }))),
      ...cell.top.map((t) => el("tr", { "data-index": t.index, "data-product": String(t.product) },
        el("td", { text: String(t.index) }), el("td", { text: fixed(t.input) }), el("td", { text: fixed(t.weight) }),
        el("td", { text: fixed(t.product) }))))),
    el("p", { class: "sum" }, number("value-sum", `sum of all ${cell.count} terms`, cell.sum),
      ...(cell.has_bias ? [" + ", number("value-bias", "bias", cell.bias)] : []), " = ", number("value-result", "", total)),
    el("p", {}, number("value-map", `${cell.layer} holds`, cell.value), " (the forward pass)"),
  ];
}
