// Inside the network: every layer's output for the current image, coloured on the scale you choose, with its
// legend; then one click (or Enter and the arrow keys) down to how a single value is made, in the view of its
// layer's kind (views/): the sliding kernel, ReLU, pooling, BatchNorm, flatten, a dense unit; softmax under the
// last layer. Every number comes from the server's forward pass of the run's own network.
import { bus, el, fixed, imageRequest, say, state } from "./api.js";
import { decode, largest, legend, limitOf, paint } from "./heat.js";
import * as activation from "./views/activation.js";
import { pickable } from "./views/board.js";
import * as dense from "./views/dense.js";
import * as flatten from "./views/flatten.js";
import * as kernel from "./views/kernel.js";
import * as norm from "./views/norm.js";
import * as pool from "./views/pool.js";
import { card as softmaxCard } from "./views/softmax.js";

const MAPS = 32;  // maps drawn per layer before a "show all" button
const VIEWS = {
  Conv2d: kernel, ReLU: activation, GELU: activation, Dropout: activation, Mul: activation,
  BatchNorm1d: norm, BatchNorm2d: norm, MaxPool2d: pool, AvgPool2d: pool, GlobalMaxPool: pool,
  AdaptiveMaxPool2d: pool, AdaptiveAvgPool2d: pool, Flatten: flatten, Linear: dense,
};
const SAME_CHANNEL = ["ReLU", "GELU", "Dropout", "Mul", "BatchNorm1d", "BatchNorm2d", "MaxPool2d", "AvgPool2d",
  "GlobalMaxPool", "AdaptiveMaxPool2d", "AdaptiveAvgPool2d"];  // a value of these comes from the same map before
const layersBox = document.getElementById("layers");
const valueBox = document.getElementById("value");
const scalePick = document.getElementById("scale");
let decoded = [];  // each layer's values (from its 8-bit picture: for drawing only; the numbers come exact)
let chosen = null;  // {layer, channel, row, col}: the value explained, until another is chosen
let shown = null;  // the explanation on screen: the chosen one, or the one under the pointer

const key = (t) => `${t.layer}/${t.channel}/${t.row || 0}/${t.col || 0}`;
const indexOf = (name) => state.look.layers.findIndex((l) => l.name === name);
const isGrey = (layer) => layer.kind === "Input" && layer.low >= 0;
// Layer ``i`` gives one number per class, as every layer after it does: the logits (a scale, TTA's mean after it).
const isOutput = (i) => state.look.layers.slice(i).every((l) => l.shape.length === 1 && l.shape[0] === state.info.classes.length);

// The colour scale of layer ``i``'s map ``channel``: the layer's own (default), the whole network's (the input
// image keeps its own), or each map its own.
function limit(i, channel = 0) {
  const layer = state.look.layers[i];
  const mode = scalePick.value;
  if (mode === "network" && layer.kind !== "Input") {
    return Math.max(...state.look.layers.filter((l) => l.kind !== "Input").map(limitOf));
  }
  if (mode === "map" && layer.shape.length === 3) {
    const [, h, w] = layer.shape;
    return largest(decoded[i], channel * h * w, h * w);
  }
  return limitOf(layer);
}

function legendOf(i) {
  const layer = state.look.layers[i];
  const note = {
    layer: "this layer's own scale", network: layer.kind === "Input" ? "the image's own scale" : "one scale for every layer",
    map: layer.shape.length === 3 ? "each map its own scale (its ± is in its tooltip); here the largest" : "this layer's own scale",
  }[scalePick.value];
  return legend(scalePick.value === "map" && layer.shape.length === 3 ? limitOf(layer) : limit(i), isGrey(layer), note);
}

// Pointer and keys over a map or vector (``h`` 0) of the overview: hovering the map explained moves the
// explanation with the pointer; a click, Enter or an arrow key chooses.
function pickOnOverview(node, base, h, w) {
  const vector = h === 0;
  const target = (at) => (vector ? { layer: base.layer, channel: at.col } : { ...base, ...at });
  const mine = (t) => t && t.layer === base.layer && (vector || t.channel === base.channel);
  pickable(node, { rows: Math.max(h, 1), cols: w,
    label: `${base.layer}${vector ? "" : ` map ${base.channel}`}: click a value, or press Enter and the arrow keys, ` +
      "to see how it is made",
    current: () => (mine(chosen) ? (vector ? { row: 0, col: chosen.channel } : chosen) : null),
    preview: (at) => { if (!at) preview(null); else if (mine(shown)) preview(target(at)); },
    choose: (at) => choose(target(at)) });
}

function mapCanvas(i, channel) {
  const layer = state.look.layers[i];
  const [, h, w] = layer.shape;
  const scale = limit(i, channel);
  const canvas = el("canvas", { class: "map", title: `${layer.name} map ${channel}: colours to ±${fixed(scale, 3)}`,
    "data-layer": layer.name, "data-channel": channel, "data-limit": String(scale) });
  paint(canvas, decoded[i], channel * h * w, h, w, scale, isGrey(layer));
  const side = Math.max(40, Math.min(96, 3 * w));
  canvas.style.width = canvas.style.height = `${side}px`;
  if (VIEWS[layer.kind]) pickOnOverview(canvas, { layer: layer.name, channel }, h, w);
  return el("span", { class: "map-box" }, canvas);
}

// A vector as a strip of colour (one column per value), a value chosen by pointer or the arrow keys.
function vectorCanvas(i) {
  const layer = state.look.layers[i], n = layer.shape[0];
  const canvas = el("canvas", { class: "vector", "data-layer": layer.name, "data-limit": String(limit(i)) });
  paint(canvas, decoded[i], 0, 1, n, limit(i));
  if (VIEWS[layer.kind]) pickOnOverview(canvas, { layer: layer.name }, 0, n);
  return el("span", { class: "map-box vector-box" }, canvas);
}

// The output layer: one bar per class, named, its logit to the right of 0 or to the left.
function logitBars(i) {
  const layer = state.look.layers[i], classes = state.info.classes || [];
  const logits = state.look.logits || Array.from(decoded[i]);
  const reach = Math.max(1e-12, ...logits.map(Math.abs));
  const top = logits.indexOf(Math.max(...logits));
  return el("div", { class: "logits" }, ...logits.map((z, c) => {
    const row = el("button", { type: "button", class: c === top ? "logit top" : "logit", "data-class": c,
      "data-logit": String(z), "aria-label": `${classes[c] ?? c}: logit ${fixed(z)}` },
    el("span", { class: "name", text: classes[c] ?? String(c) }),
    el("span", { class: "axis" }, el("span", { class: z >= 0 ? "fill plus" : "fill minus",
      style: `width:${(50 * Math.abs(z) / reach).toFixed(1)}%` })),
    el("span", { class: "pct", text: fixed(z, 2) }));
    if (VIEWS[layer.kind]) row.addEventListener("click", () => choose({ layer: layer.name, channel: c }));
    else row.disabled = true;  // the mean of test-time augmentation's passes: nothing to open
    return row;
  }));
}

function layerCard(layer, i) {
  const title = el("h3", {}, el("b", { text: layer.name }), ` ${layer.kind} · ${layer.shape.join("×")}`,
    el("small", { text: ` ${layer.low.toFixed(2)} … ${layer.high.toFixed(2)}` }));
  const card = el("div", { class: "layer", "data-name": layer.name, "data-kind": layer.kind }, title,
    layer.note ? el("p", { class: "hint note", text: layer.note }) : "", legendOf(i));
  const last = i === state.look.layers.length - 1;
  if (layer.shape.length === 3) {
    const grid = el("div", { class: "maps" });
    const count = layer.shape[0];
    const draw = (n) => grid.replaceChildren(...Array.from({ length: n }, (_, c) => mapCanvas(i, c)));
    draw(Math.min(count, MAPS));
    card.append(grid);
    if (count > MAPS) {
      const more = el("button", { type: "button", text: `show all ${count} maps` });
      more.addEventListener("click", () => { draw(count); more.remove(); mark(); });
      card.append(more);
    }
  } else if (last) {
    card.append(logitBars(i), el("p", { class: "hint", text: "the logits, one per class: softmax, below, turns them " +
      "into the answer's probabilities." + (VIEWS[layer.kind] ? " Click a class to see how its logit is made." : "") }));
  } else {
    card.append(vectorCanvas(i));
  }
  return card;
}

async function showLayers() {
  if (!state.look) {
    layersBox.replaceChildren(el("p", { class: "hint", text: "No image yet: draw, drop or pick one in the playground." }));
    valueBox.hidden = true;
    shown = null;
    return;
  }
  const look = state.look;
  const values = await Promise.all(look.layers.map(decode));
  if (look !== state.look) return;  // a newer image came meanwhile
  decoded = values;
  drawLayers();
  if (chosen && indexOf(chosen.layer) >= 0) choose(chosen); else { chosen = shown = null; valueBox.hidden = true; }
}

function drawLayers() {
  const layers = state.look.layers;
  const chain = el("p", { class: "chain", text: layers.filter((l) => !["ReLU", "GELU", "Dropout", "Flatten", "Mean"].includes(l.kind))
    .map((l) => l.shape.join("×")).join(" → ") });
  const cards = layers.map(layerCard);
  const logits = state.look.logits || Array.from(decoded[layers.length - 1]);
  layersBox.replaceChildren(chain, ...cards, softmaxCard(logits, state.info.classes || [], layers[layers.length - 1]));
  if (shown) place(shown);
  mark();
}

// --- one value, explained -------------------------------------------------------------------------------------
let pending = null, busy = false, last = null;  // requests go one at a time; only the newest waiting one is sent

function choose(target) {
  chosen = target;
  request(target, "chosen");
}

// The value under the pointer, explained while the pointer stays; null: back to the chosen one.
function preview(target) {
  if (!target) {
    if (chosen && shown && key(shown) !== key(chosen)) request(chosen, "chosen");
    return;
  }
  if (!shown || key(target) !== key(shown)) request(target, "preview");
}

function request(target, how) {
  pending = { target, how, look: state.look };
  if (!busy) pump();
}

async function pump() {
  busy = true;
  while (pending) {
    const { target, how, look } = pending;
    pending = null;
    let cell;
    if (last && last.look === look && key(last.cell) === key(target)) cell = last.cell;  // back to the chosen one
    else {
      try {
        const { layer, channel, row = 0, col = 0 } = target;
        cell = await imageRequest("cell", { layer, channel, row, col });
        say("", "value");
      } catch (error) {
        say(error.message, "value");
        continue;
      }
    }
    if (look !== state.look || pending) continue;  // answered for another image, or already outdated
    if (how === "chosen") last = { look, cell };
    show(cell, how);
  }
  busy = false;
}

function context(cell) {
  const i = indexOf(cell.layer), j = indexOf(cell.source);
  const layers = state.look.layers;
  return {
    index: i, layer: layers[i], values: decoded[i], output: isOutput(i), classes: state.info.classes || [],
    source: j >= 0 ? { index: j, layer: layers[j], values: decoded[j] } : null,
    limit, grey: (k) => isGrey(layers[k]),
    chosen: () => (chosen && chosen.layer === cell.layer && chosen.channel === cell.channel ? chosen : null),
    preview: (at) => preview(at && { layer: cell.layer, channel: cell.channel, ...at }),
    choose: (at) => choose({ layer: cell.layer, channel: cell.channel, ...at }),
    redraw: () => show(cell, valueBox.dataset.state),
  };
}

function show(cell, how) {
  shown = cell;
  valueBox.replaceChildren(...VIEWS[cell.kind].render(cell, context(cell)));
  valueBox.dataset.cell = key(cell);
  valueBox.dataset.state = how;
  valueBox.hidden = false;
  place(cell);
  mark();
}

// The explanation right under its layer's card, where the eye is.
function place(cell) {
  const card = layersBox.querySelector(`.layer[data-name="${CSS.escape(cell.layer)}"]`);
  if (card && card.nextElementSibling !== valueBox) card.after(valueBox);
}

// On the overview: the map explained outlined, its value marked, the maps it was computed from outlined too
// (the edges of CNN Explainer's overview).
function mark() {
  for (const node of layersBox.querySelectorAll(".chosen, .source")) node.classList.remove("chosen", "source");
  for (const node of layersBox.querySelectorAll(".marker")) node.remove();
  for (const node of layersBox.querySelectorAll(".logit.here")) node.classList.remove("here");
  if (!shown || valueBox.hidden) return;
  const layer = state.look.layers[indexOf(shown.layer)];
  if (layer.shape.length === 3) {
    const canvas = layersBox.querySelector(`canvas.map[data-layer="${CSS.escape(shown.layer)}"][data-channel="${shown.channel}"]`);
    if (canvas) {
      const [, h, w] = layer.shape;
      canvas.classList.add("chosen");
      canvas.parentElement.append(el("i", { class: "marker", style:
        `left:${100 * shown.col / w}%;top:${100 * shown.row / h}%;width:${100 / w}%;height:${100 / h}%` }));
    }
  } else {
    const canvas = layersBox.querySelector(`canvas.vector[data-layer="${CSS.escape(shown.layer)}"]`);
    if (canvas) canvas.parentElement.append(el("i", { class: "marker", style:
      `left:${100 * shown.channel / layer.shape[0]}%;top:0;width:max(3px, ${100 / layer.shape[0]}%);height:100%` }));
    const bar = layersBox.querySelector(`.layer[data-name="${CSS.escape(shown.layer)}"] .logit[data-class="${shown.channel}"]`);
    if (bar) bar.classList.add("here");
  }
  const from = SAME_CHANNEL.includes(shown.kind) ? `[data-channel="${shown.channel}"]`
    : shown.kind === "Flatten" && shown.from ? `[data-channel="${shown.from[0]}"]` : "";
  for (const node of layersBox.querySelectorAll(`canvas[data-layer="${CSS.escape(shown.source)}"]${from}`)) {
    node.classList.add("source");
  }
}

scalePick.addEventListener("change", () => {
  if (!state.look || !decoded.length) return;
  drawLayers();
  if (shown) show(shown, valueBox.dataset.state);
});
// The pointer off every map: back to the value chosen. (A map redrawn under the pointer never tells it left.)
document.addEventListener("pointermove", (event) => {
  if (shown && chosen && !event.target.closest(".clickable")) preview(null);
});
bus.addEventListener("look", showLayers);
bus.addEventListener("run", () => { chosen = shown = last = null; valueBox.hidden = true; });
