// Theory: how input size, kernel, padding and stride set the output's size, with the window sliding over a
// real image of the run's data (the current one, shrunk to the input size chosen). Each setting has a slider and
// a box; a setting that cannot work is marked and said, never quietly replaced by one that can.
import { bus, el, look, state } from "./api.js";
import { colour, css } from "./heat.js";

const $ = (id) => document.getElementById(id);
const FIELDS = [  // id, name, [least, most]: what the widget draws
  ["t-size", "input", [1, 32]], ["t-kernel", "kernel", [1, 7]], ["t-pad", "padding", [0, 3]], ["t-stride", "stride", [1, 4]],
];
let frame = 0, playing = true, pixels = null;  // pixels: the image's grey levels in [0, 1], (H, W)

function outputSize(n, k, p, s) {
  return n + 2 * p < k ? 0 : Math.floor((n + 2 * p - k) / s) + 1;
}

// The settings as typed, and what is wrong with them: errors (nothing can be computed) and warnings (it can,
// but something is lost), each naming the fields it marks.
function settings() {
  const problems = [], t = { op: $("t-op").value };
  for (const [id, name, [least, most]] of FIELDS) {
    const text = $(id).value.trim(), v = Number(text);
    const key = id.slice(2);
    t[{ size: "n", kernel: "k", pad: "p", stride: "s" }[key]] = v;
    if (text === "" || !Number.isInteger(v)) {
      problems.push({ level: "error", kind: "not-a-number", fields: [id], text: `${name}: “${text}” is not a whole number` });
    } else if (v < least || v > most) {
      problems.push({ level: "error", kind: "out-of-range", fields: [id],
        text: `${name} ${v}: the widget draws ${name === "padding" ? "paddings" : `${name}s`} of ${least} to ${most}` });
    }
  }
  if (problems.length) return { t, problems };
  const { n, k, p, s, op } = t, pool = op !== "conv";
  if (k > n + 2 * p) {
    problems.push({ level: "error", kind: "kernel-too-large", fields: ["t-kernel", "t-size", "t-pad"],
      text: `a ${k}×${k} ${pool ? "window" : "kernel"} does not fit in the padded ${n + 2 * p}×${n + 2 * p} input: no output` });
  }
  if (pool && p >= k) {
    problems.push({ level: "error", kind: "padding-only-window", fields: ["t-pad", "t-kernel"],
      text: `padding ${p} ≥ window ${k}: the corner windows hold only padding, nothing to pool (PyTorch refuses padding over k/2)` });
  } else if (pool && p > k / 2) {
    problems.push({ level: "error", kind: "padding-over-half", fields: ["t-pad", "t-kernel"],
      text: `padding ${p} is more than half the ${k}×${k} window: PyTorch refuses it (padding ≤ k/2 = ${k / 2})` });
  } else if (p >= k) {
    problems.push({ level: "warning", kind: "padding-only-window", fields: ["t-pad", "t-kernel"],
      text: `padding ${p} ≥ kernel ${k}: the corner outputs see only padding, so they are always 0` });
  }
  const left = k > n + 2 * p ? 0 : (n + 2 * p - k) % s, lost = left - p;  // rows past the last window; real ones
  if (!problems.some((q) => q.level === "error") && lost > 0) {
    problems.push({ level: "warning", kind: "stride-skips", fields: ["t-stride"],
      text: `stride ${s} skips the last ${lost} row${lost > 1 ? "s" : ""} and column${lost > 1 ? "s" : ""} of the input: ` +
        `(${n} + 2·${p} − ${k}) mod ${s} = ${left}, so no window reaches ${lost > 1 ? "them" : "it"}` });
  }
  return { t, problems, skipped: Math.max(0, lost) };
}

function showProblems(problems) {
  for (const [id] of FIELDS) {
    const level = problems.filter((q) => q.fields.includes(id)).map((q) => q.level);
    $(id).classList.toggle("invalid", level.includes("error"));
    $(id).classList.toggle("warn", !level.includes("error") && level.includes("warning"));
    if (level.includes("error")) $(id).setAttribute("aria-invalid", "true"); else $(id).removeAttribute("aria-invalid");
  }
  $("t-problems").replaceChildren(...problems.map((q) => el("li", { class: q.level, "data-problem": q.kind,
    text: `${q.level === "error" ? "Impossible" : "Note"}: ${q.text}` })));
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

// The widget's kernel: −1 in its left column, +1 in its right (a vertical-edge detector); 1 for a 1×1 kernel.
const weight = (k, c) => (k === 1 ? 1 : c === 0 ? -1 : c === k - 1 ? 1 : 0);

function windowValue(image, top, left, { n, k, p, op }) {
  const inside = [];
  let conv = 0;
  for (let r = 0; r < k; r++) for (let c = 0; c < k; c++) {
    const y = top + r - p, x = left + c - p, real = y >= 0 && y < n && x >= 0 && x < n;
    const v = real ? image[y][x] : 0;  // zero padding
    if (real) inside.push(v);
    conv += v * weight(k, c);
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

// The window: a dark frame with a white line inside it, seen on any colour beneath.
function frameAt(ctx, x, y, width, height) {
  ctx.lineWidth = 3; ctx.strokeStyle = "#111"; ctx.strokeRect(x + 1.5, y + 1.5, width - 3, height - 3);
  ctx.lineWidth = 1.5; ctx.strokeStyle = "#fff"; ctx.strokeRect(x + 3.75, y + 3.75, width - 7.5, height - 7.5);
}

function render() {
  const { t, problems, skipped } = settings(), { n, k, p, s, op } = t;
  showProblems(problems);
  const error = problems.find((q) => q.level === "error");
  const shown = (v) => (Number.isFinite(v) ? v : "?");
  const formula = `⌊(${shown(n)} + 2·${shown(p)} − ${shown(k)}) / ${shown(s)}⌋ + 1 = `;
  if (error) {
    const invalid = ["not-a-number", "out-of-range"].includes(error.kind);
    $("t-formula").replaceChildren("output = ⌊(n + 2p − k) / s⌋ + 1 = ", formula,
      el("b", { id: "t-output-size", "data-size": invalid ? "invalid" : "impossible", class: "impossible",
        text: invalid ? "— (a setting is not one the widget draws)" : "nothing: these settings cannot work" }));
    for (const id of ["t-input", "t-output"]) { $(id).width = $(id).height = 0; $(id).removeAttribute("data-values"); }
    $("t-input-caption").textContent = "";
    $("t-output-caption").textContent = "fix the marked setting to see the window slide";
    $("t-explain").textContent = "";
    return;
  }
  for (const [id] of FIELDS) $(`${id}-slider`).value = $(id).value;
  const out = outputSize(n, k, p, s), size = `${out}×${out}`;
  $("t-formula").replaceChildren("output = ⌊(n + 2p − k) / s⌋ + 1 = ", formula,
    el("b", { id: "t-output-size", "data-size": size, text: `${out}, a ${size} map` }));
  const image = shrunk(n), total = n + 2 * p;
  const outputs = Array.from({ length: out }, (_, r) => Array.from({ length: out }, (_, c) => windowValue(image, r * s, c * s, t)));
  // one colour scale for the whole output, known from the start: the first cell is not drawn at full colour
  // because it is the only one drawn yet
  const limit = Math.max(1e-6, ...outputs.flat().map(Math.abs));
  const room = Math.min(document.querySelector(".theory-boards").clientWidth, 720);
  const side = Math.max(6, Math.min(40, Math.floor((room - 24) / (total + Math.max(out, 1)))));
  const steps = out * out, at = steps ? frame % steps : 0;
  const [orow, ocol] = [Math.floor(at / Math.max(out, 1)), at % Math.max(out, 1)];
  $("t-input").dataset.values = JSON.stringify(image);
  board($("t-input"), total, side, (ctx) => {
    for (let r = 0; r < total; r++) for (let c = 0; c < total; c++) {
      const y = r - p, x = c - p, real = y >= 0 && y < n && x >= 0 && x < n;
      const g = real ? Math.round(255 * image[y][x]) : 235;
      ctx.fillStyle = real ? `rgb(${g},${g},${g})` : "#e6e8f4";
      ctx.fillRect(c * side, r * side, side - 1, side - 1);
      if (!real && side >= 16) { ctx.fillStyle = "#4a5060"; ctx.font = `${side / 2.2}px sans-serif`; ctx.fillText("0", c * side + side / 3, r * side + side * 0.65); }
    }
    if (skipped) {  // the rows and columns no window reaches, crossed out in red
      ctx.fillStyle = "rgba(179, 38, 30, 0.45)";
      const from = (total - p - skipped) * side;
      ctx.fillRect(from, 0, skipped * side, total * side);
      ctx.fillRect(0, from, total * side, skipped * side);
    }
    if (steps) frameAt(ctx, ocol * s * side, orow * s * side, k * side, k * side);
  });
  const output = $("t-output");
  output.dataset.values = JSON.stringify(outputs);
  output.dataset.limit = String(limit);
  output.dataset.frame = String(at);
  board(output, Math.max(out, 1), side, (ctx) => {
    ctx.fillStyle = "#eef0f4";
    for (let r = 0; r < out; r++) for (let c = 0; c < out; c++) ctx.fillRect(c * side, r * side, side - 1, side - 1);
    for (let i = 0; i <= at && i < steps; i++) {
      const [r, c] = [Math.floor(i / out), i % out], v = outputs[r][c];
      ctx.fillStyle = css(op === "conv" ? colour(v, limit) : Array(3).fill(Math.round(255 * v)));
      ctx.fillRect(c * side, r * side, side - 1, side - 1);
    }
    if (steps) frameAt(ctx, ocol * side, orow * side, side, side);
  });
  $("t-input-caption").textContent = `input ${n}×${n}` + (p ? `, padded by ${p} to ${total}×${total}` : "");
  $("t-output-caption").textContent = `output ${size}` + (op === "conv" ? `, red + and blue − up to ±${limit.toFixed(2)}` : "");
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

for (const [id] of FIELDS) {
  $(id).addEventListener("input", () => { frame = 0; render(); });
  $(`${id}-slider`).addEventListener("input", () => { $(id).value = $(`${id}-slider`).value; frame = 0; render(); });
}
$("t-op").addEventListener("input", () => { frame = 0; render(); });
$("t-course").addEventListener("click", () => {
  [$("t-size").value, $("t-kernel").value, $("t-pad").value, $("t-stride").value] = [5, 3, 0, 1];
  $("t-op").value = "conv";
  frame = 0;
  render();
});
$("t-play").addEventListener("click", () => {
  playing = !playing;
  $("t-play").textContent = playing ? "Pause" : "Play";
  $("t-play").setAttribute("aria-pressed", String(!playing));
});
setInterval(() => { if (playing && !$("theory").hidden) { frame++; render(); } }, 600);
bus.addEventListener("look", async () => { await loadImage(); render(); });
bus.addEventListener("view", () => {
  if ($("theory").hidden) return;
  if (!state.look && state.info) look({ pick: true });  // a real image of the run's data to slide over
  render();
});
window.addEventListener("resize", () => { if (!$("theory").hidden) render(); });
render();
