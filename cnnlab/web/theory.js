// Theory: how input size, kernel, padding and stride set the output's size, with the window sliding over a
// real image of the run's data (the current one, shrunk to the input size chosen).
import { bus, el, look, state } from "./api.js";
import { colour } from "./heat.js";

const $ = (id) => document.getElementById(id);
const fields = ["t-size", "t-kernel", "t-pad", "t-stride"].map($);
let frame = 0, playing = true, pixels = null;  // pixels: the image's grey levels in [0, 1], (H, W)

function outputSize(n, k, p, s) {
  return n + 2 * p < k ? 0 : Math.floor((n + 2 * p - k) / s) + 1;
}

function settings() {
  const [n, k, p, s] = fields.map((f) => Math.max(Number(f.min), Math.min(Number(f.max), Math.round(Number(f.value) || 0))));
  return { n, k, p, s, op: $("t-op").value };
}

// The image shrunk to n×n by averaging the pixels that fall in each cell.
function shrunk(n) {
  if (!pixels) return Array.from({ length: n }, (_, r) => Array.from({ length: n }, (_, c) => ((r + c) % n) / n));
  const [h, w] = [pixels.length, pixels[0].length];
  return Array.from({ length: n }, (_, r) => Array.from({ length: n }, (_, c) => {
    let sum = 0, count = 0;
    for (let y = Math.floor(r * h / n); y < Math.max(Math.floor((r + 1) * h / n), Math.floor(r * h / n) + 1); y++)
      for (let x = Math.floor(c * w / n); x < Math.max(Math.floor((c + 1) * w / n), Math.floor(c * w / n) + 1); x++) {
        sum += pixels[y][x]; count++;
      }
    return sum / count;
  }));
}

function windowValue(image, top, left, { n, k, p, op }) {
  const inside = [];
  let conv = 0;
  for (let r = 0; r < k; r++) for (let c = 0; c < k; c++) {
    const y = top + r - p, x = left + c - p, real = y >= 0 && y < n && x >= 0 && x < n;
    const v = real ? image[y][x] : 0;  // zero padding
    if (real) inside.push(v);
    conv += v * (k === 1 ? 1 : c === 0 ? -1 : c === k - 1 ? 1 : 0);
  }
  if (op === "conv") return conv;
  if (!inside.length) return 0;
  return op === "max" ? Math.max(...inside) : inside.reduce((a, b) => a + b, 0) / inside.length;
}

function board(canvas, cells, side, draw) {
  canvas.width = canvas.height = cells * side;
  canvas.style.width = canvas.style.height = `${cells * side}px`;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  draw(context);
}

function render() {
  const t = settings(), { n, k, p, s, op } = t;
  const out = outputSize(n, k, p, s);
  const size = out ? `${out}×${out}` : "none";
  $("t-formula").replaceChildren("output = ⌊(n + 2p − k) / s⌋ + 1 = ",
    `⌊(${n} + 2·${p} − ${k}) / ${s}⌋ + 1 = `,
    el("b", { id: "t-output-size", "data-size": size, text: out ? `${out}, a ${size} map` : "nothing: the kernel is larger than the padded input" }));
  const image = shrunk(n), total = n + 2 * p;
  const room = Math.min(document.querySelector(".theory-boards").clientWidth, 720);
  const side = Math.max(12, Math.min(40, Math.floor((room - 24) / (total + Math.max(out, 1)))));
  const steps = out * out, at = steps ? frame % steps : 0;
  const [orow, ocol] = [Math.floor(at / Math.max(out, 1)), at % Math.max(out, 1)];
  board($("t-input"), total, side, (ctx) => {
    for (let r = 0; r < total; r++) for (let c = 0; c < total; c++) {
      const y = r - p, x = c - p, real = y >= 0 && y < n && x >= 0 && x < n;
      const g = real ? Math.round(255 * image[y][x]) : 235;
      ctx.fillStyle = real ? `rgb(${g},${g},${g})` : "#eef";
      ctx.fillRect(c * side, r * side, side - 1, side - 1);
      if (!real && side >= 16) { ctx.fillStyle = "#99a"; ctx.font = `${side / 2.2}px sans-serif`; ctx.fillText("0", c * side + side / 3, r * side + side * 0.65); }
    }
    if (steps) {
      ctx.strokeStyle = "#e4572e"; ctx.lineWidth = 3;
      ctx.strokeRect(ocol * s * side + 1.5, orow * s * side + 1.5, k * side - 3, k * side - 3);
    }
  });
  board($("t-output"), Math.max(out, 1), side, (ctx) => {
    ctx.fillStyle = "#eef0f4";
    for (let r = 0; r < out; r++) for (let c = 0; c < out; c++) ctx.fillRect(c * side, r * side, side - 1, side - 1);
    const values = [];
    for (let i = 0; i <= at && i < steps; i++) {
      const [r, c] = [Math.floor(i / out), i % out];
      values.push([r, c, windowValue(image, r * s, c * s, t)]);
    }
    const limit = Math.max(1e-6, ...values.map((v) => Math.abs(v[2])));
    for (const [r, c, v] of values) {
      const [red, green, blue] = op === "conv" ? colour(v, limit) : Array(3).fill(Math.round(255 * v));
      ctx.fillStyle = `rgb(${red},${green},${blue})`;
      ctx.fillRect(c * side, r * side, side - 1, side - 1);
    }
    if (steps) { ctx.strokeStyle = "#e4572e"; ctx.lineWidth = 3; ctx.strokeRect(ocol * side + 1.5, orow * side + 1.5, side - 3, side - 3); }
  });
  $("t-input-caption").textContent = `input ${n}×${n}` + (p ? `, padded by ${p} to ${total}×${total}` : "");
  $("t-output-caption").textContent = `output ${size}`;
  $("t-explain").textContent = {
    conv: `A ${k}×${k} edge kernel (−1 in its left column, +1 in its right) slides ${s} cell${s > 1 ? "s" : ""} at a time; ` +
      "each output cell is the sum of the window times the kernel (red +, blue −). Padding adds zeros around the border, " +
      "so the kernel can centre on the edge pixels: with padding (k − 1) / 2 and stride 1 the output keeps the input's size.",
    max: `Max pooling keeps the largest value of each ${k}×${k} window (padding is left out): the strongest response survives.`,
    avg: `Average pooling keeps the mean of each ${k}×${k} window (padding is left out): a smoothed, smaller map.`,
  }[op];
}

async function loadImage() {
  if (!state.look) { pixels = null; return; }
  const image = new Image();
  image.src = `data:image/png;base64,${state.look.input}`;
  await image.decode();
  const canvas = el("canvas");
  [canvas.width, canvas.height] = [image.width, image.height];
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, image.width, image.height).data;
  pixels = Array.from({ length: image.height }, (_, r) => Array.from({ length: image.width }, (_, c) => {
    const i = 4 * (r * image.width + c);
    return (data[i] + data[i + 1] + data[i + 2]) / 765;
  }));
}

for (const input of [...fields, $("t-op")]) input.addEventListener("input", () => { frame = 0; render(); });
$("t-course").addEventListener("click", () => {
  [$("t-size").value, $("t-kernel").value, $("t-pad").value, $("t-stride").value] = [5, 3, 0, 1];
  $("t-op").value = "conv";
  frame = 0;
  render();
});
$("t-play").addEventListener("click", () => {
  playing = !playing;
  $("t-play").textContent = playing ? "Pause" : "Play";
});
setInterval(() => { if (playing && !$("theory").hidden) { frame++; render(); } }, 600);
bus.addEventListener("look", async () => { await loadImage(); render(); });
bus.addEventListener("view", () => {
  if ($("theory").hidden) return;
  if (!state.look && state.info) look({ pick: true });  // a real image of the run's data to slide over
  render();
});
window.addEventListener("resize", () => { if (!$("theory").hidden) render(); });
