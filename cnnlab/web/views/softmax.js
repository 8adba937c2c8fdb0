// Softmax explained with the run's own numbers: each class's logit, its exponential, and its share of their
// sum — the probabilities of the playground's bars. ``last``: the layer the logits are (its note says what they
// are where its name does not: the mean of test-time augmentation's passes).
import { el, fixed } from "../api.js";

const exponent = (v) => (v >= 1e5 || v < 1e-3 ? v.toExponential(3) : v.toFixed(4));

export function card(logits, classes, last) {
  const top = Math.max(...logits);
  // e^z itself while it fits a double; shifted by the largest logit (the same shares) where it would not
  const shift = top > 80 ? top : 0;
  const exps = logits.map((z) => Math.exp(z - shift)), total = exps.reduce((a, b) => a + b, 0);
  const shares = exps.map((e) => e / total);
  const winner = shares.indexOf(Math.max(...shares));
  const e = shift ? `e^(z − ${fixed(shift)})` : "e^z";
  const rows = logits.map((z, i) => el("tr", { class: i === winner ? "top" : undefined, "data-class": i,
    "data-logit": String(z), "data-exp": String(exps[i]), "data-share": String(shares[i]) },
  el("th", { text: classes[i] ?? String(i) }), el("td", { text: fixed(z) }), el("td", { text: exponent(exps[i]) }),
  el("td", { text: `${exponent(exps[i])} / ${exponent(total)}` }),
  el("td", {}, el("span", { class: "share" }, el("span", { class: "track" },
    el("span", { class: "fill", style: `width:${(100 * shares[i]).toFixed(1)}%` })), ` ${(100 * shares[i]).toFixed(2)}%`))));
  return el("div", { class: "layer softmax", id: "softmax", "data-sum": String(total) },
    el("h3", {}, el("b", { text: "softmax" }), " logits → exponentials → shares"),
    el("p", { class: "hint", text: `Softmax makes ${last.name}'s ${logits.length} logits z into probabilities: it takes ` +
      `${e} of each, which is positive and grows fast with z, then divides each by their sum, ${exponent(total)}. ` +
      "The shares add up to 1; the largest logit gets the largest share." }),
    el("div", { class: "scroll" }, el("table", { id: "softmax-table" },
      el("tr", {}, ...["class", "logit z", e, `${e} / Σ`, "share"].map((t) => el("th", { text: t }))), ...rows)),
    last.note ? el("p", { class: "hint", id: "softmax-note", text: `The logits are ${last.name}'s: ${last.note}.` }) : "");
}
