// Inside the network: every layer's activations for the current image, then one click down to how a single
// value of a convolution's map is made (patch × kernel, sum, bias), what ReLU and the pooling window do with it.
import { bus, el, imageRequest, say, state } from "./api.js";
import { colour, decode, limitOf, paint } from "./heat.js";

const MAPS = 32;  // maps drawn per layer before a "show all" button
const CHANNELS = 3;  // input channels of a patch drawn in full; the rest are summed in one line
const layersBox = document.getElementById("layers");
const valueBox = document.getElementById("value");
let chosen = null;  // {layer, channel, row, col} of the value explained

function shape(layer) {
  return layer.shape.join("×");
}

function mapCanvas(layer, values, channel) {
  const [, h, w] = layer.shape;
  const canvas = el("canvas", { class: "map", title: `${layer.name} map ${channel}` });
  paint(canvas, values, channel * h * w, h, w, limitOf(layer), layer.kind === "Input" && layer.low >= 0);
  const side = Math.max(40, Math.min(96, 3 * w));
  canvas.style.width = canvas.style.height = `${side}px`;
  if (layer.kind === "Conv2d") {
    canvas.classList.add("clickable");
    canvas.dataset.layer = layer.name;
    canvas.dataset.channel = channel;
    canvas.addEventListener("click", (event) => {
      const box = canvas.getBoundingClientRect();
      const col = Math.min(w - 1, Math.floor((event.clientX - box.left) / box.width * w));
      const row = Math.min(h - 1, Math.floor((event.clientY - box.top) / box.height * h));
      choose({ layer: layer.name, channel, row, col });
    });
  }
  return el("span", { class: "map-box" }, canvas);
}

function vectorCanvas(layer, values, classes) {
  const canvas = el("canvas", { class: "vector" });
  const n = values.length, limit = limitOf(layer);
  if (n > 256) {  // too many for bars: one strip of colour
    paint(canvas, values, 0, 1, n, limit);
    return canvas;
  }
  canvas.width = Math.max(n * 6, 120);
  canvas.height = 60;
  const context = canvas.getContext("2d"), step = canvas.width / n, middle = layer.low < 0 ? 30 : 58;
  for (let i = 0; i < n; i++) {
    const [r, g, b] = colour(values[i], limit);
    context.fillStyle = `rgb(${r},${g},${b})`;
    const height = limit ? values[i] / limit * (layer.low < 0 ? 28 : 56) : 0;
    context.fillRect(i * step, middle - Math.max(height, 0), Math.max(step - 1, 1), Math.abs(height) || 1);
  }
  if (classes) canvas.title = classes.map((c, i) => `${c}: ${values[i].toFixed(3)}`).join("\n");
  return canvas;
}

async function showLayers() {
  if (!state.look) {
    layersBox.replaceChildren(el("p", { class: "hint", text: "No image yet: draw, drop or pick one in the playground." }));
    valueBox.hidden = true;
    return;
  }
  const layers = state.look.layers;
  const decoded = await Promise.all(layers.map(decode));
  const chain = el("p", { class: "chain", text: layers.filter((l) => !["ReLU", "GELU", "Dropout", "Flatten"].includes(l.kind))
    .map(shape).join(" → ") });
  const cards = layers.map((layer, i) => {
    const values = decoded[i];
    const title = el("h3", {}, el("b", { text: layer.name }), ` ${layer.kind} · ${shape(layer)}`,
      el("small", { text: ` ${layer.low.toFixed(2)} … ${layer.high.toFixed(2)}` }));
    const card = el("div", { class: "layer", "data-name": layer.name }, title);
    if (layer.shape.length === 3) {
      const grid = el("div", { class: "maps" });
      const count = layer.shape[0];
      const draw = (n) => grid.replaceChildren(...Array.from({ length: n }, (_, c) => mapCanvas(layer, values, c)));
      draw(Math.min(count, MAPS));
      card.append(grid);
      if (count > MAPS) {
        const more = el("button", { type: "button", text: `show all ${count} maps` });
        more.addEventListener("click", () => { draw(count); more.remove(); });
        card.append(more);
      }
    } else {
      const last = i === layers.length - 1;
      card.append(vectorCanvas(layer, values, last ? state.info.classes : null));
      if (last) card.append(el("p", { class: "hint", text: "the logits: softmax turns them into the bars' probabilities" }));
    }
    return card;
  });
  layersBox.replaceChildren(chain, ...cards);
  if (chosen) choose(chosen);
}

function grid(rows, className, marks) {
  const table = el("table", { class: `cells ${className}` });
  const limit = Math.max(1e-12, ...rows.flat().map(Math.abs));
  rows.forEach((row, r) => table.append(el("tr", {}, ...row.map((v, c) => {
    const [red, green, blue] = colour(v, limit);
    const dark = Math.abs(v) > 0.6 * limit ? ";color:#fff" : "";
    const cell = el("td", { text: v.toFixed(2), title: String(v), style: `background:rgb(${red},${green},${blue})${dark}` });
    if (marks && marks[r][c]) cell.className = "padding";
    return cell;
  }))));
  return table;
}

function number(id, label, value) {
  return el("span", { class: "number", id, "data-value": String(value) }, `${label} `, el("b", { text: value.toFixed(4) }));
}

async function choose(target) {
  chosen = target;
  let v;
  try {
    v = await imageRequest("value", target);
  } catch (error) {
    say(error.message);
    return;
  }
  for (const canvas of layersBox.querySelectorAll("canvas.chosen")) canvas.classList.remove("chosen");
  for (const marker of layersBox.querySelectorAll(".marker")) marker.remove();
  const canvas = layersBox.querySelector(`canvas[data-layer="${v.layer}"][data-channel="${v.channel}"]`);
  if (canvas) {  // the map outlined, the pixel marked on it
    canvas.classList.add("chosen");
    const [h, w] = [canvas.height, canvas.width];
    canvas.parentElement.append(el("i", { class: "marker", style:
      `left:${100 * v.col / w}%;top:${100 * v.row / h}%;width:${100 / w}%;height:${100 / h}%` }));
  }
  const channels = v.patch.length;
  const rows = v.patch.slice(0, CHANNELS).map((patch, c) => el("div", { class: "product-row" },
    el("span", { class: "channel", text: `input channel ${c}` }),
    grid(patch, "patch", v.padded), el("span", { class: "op", text: "×" }),
    grid(v.kernel[c], "kernel"), el("span", { class: "op", text: "=" }),
    grid(v.products[c], "products")));
  if (channels > CHANNELS) {
    const rest = v.products.slice(CHANNELS).flat(2).reduce((a, b) => a + b, 0);
    rows.push(el("p", { text: `… and ${channels - CHANNELS} more input channels, whose products add up to ${rest.toFixed(4)}` }));
  }
  const k = v.kernel[0].length, total = v.sum + v.bias;
  const parts = [
    el("h2", { text: `${v.layer}, map ${v.channel}, row ${v.row}, column ${v.col}` }),
    el("p", { text: `Filter ${v.channel}'s ${channels}×${k}×${k} kernel lies on the ${channels}×${k}×${k} patch of its input ` +
      "around this pixel (hatched cells hang over the border: zero padding). Multiply cell by cell, add everything up, add the bias:" }),
    ...rows,
    el("p", { class: "sum" }, number("value-sum", `sum of the ${channels * k * k} products`, v.sum), " + ",
      number("value-bias", "bias", v.bias), " = ", number("value-result", "", total)),
    el("p", {}, number("value-map", "the map holds", v.value), ` (the forward pass; difference ${Math.abs(total - v.value).toExponential(1)})`),
  ];
  let current = v.value;
  for (const step of v.steps) {
    const says = step.kind === "ReLU" ? `max(0, ${current.toFixed(4)})` : step.kind;
    parts.push(el("p", { class: "step" }, `${step.name} (${step.kind}): ${says} = `, el("b", { text: step.value.toFixed(4) })));
    current = step.value;
  }
  if (v.pool) {
    const p = v.pool, size = `${p.values.length}×${p.values[0].length}`;
    const what = p.kind.includes("Max") ? "keeps the largest" : "takes the mean";
    const window = grid(p.values, "pool");
    const [wr, wc] = [v.row - p.top, v.col - p.left];
    if (window.rows[wr]) window.rows[wr].cells[wc].classList.add("here");
    parts.push(el("div", { class: "product-row" }, window, el("p", {},
      `${p.name} ${what} of its ${size} window (this pixel outlined): `, el("b", { text: p.value.toFixed(4) }),
      `, at row ${p.position[0]}, column ${p.position[1]} of its map.`)));
  }
  valueBox.replaceChildren(...parts);
  valueBox.hidden = false;
}

bus.addEventListener("look", showLayers);
bus.addEventListener("run", () => { chosen = null; valueBox.hidden = true; });
