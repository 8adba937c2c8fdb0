// The playground: draw (digit runs), drop or choose a file, or a random test image; the bars of its answer
// and the image exactly as the network received it, with saliency or occlusion over it.
import { bus, el, expectLook, imageRequest, look, say, state } from "./api.js";
import { decode, overlay } from "./heat.js";
import { sketchpad } from "./pad.js";

const DEBOUNCE = 150;  // ms between looks while drawing
let timer = null;
const pad = sketchpad(document.getElementById("pad"), {
  onStroke: () => { if (!timer) timer = setTimeout(sendPad, DEBOUNCE); }, onEnd: sendPad });

async function sendPad() {
  clearTimeout(timer);
  timer = null;
  if (!pad.drawn) return;
  expectLook();  // now: toBlob answers later
  look({ blob: await pad.blob() });
}

const drop = document.getElementById("drop");
const file = document.getElementById("file");
file.addEventListener("change", () => { if (file.files[0]) { pad.clear(); look({ blob: file.files[0] }); } file.value = ""; });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const dropped = event.dataTransfer.files[0];
  if (dropped) { pad.clear(); look({ blob: dropped }); }
});
document.getElementById("random").addEventListener("click", () => { pad.clear(); look({ pick: true }); });
document.getElementById("clear").addEventListener("click", () => {
  pad.clear();
  state.input = state.look = state.failed = null;
  say("", "look");
  bus.dispatchEvent(new Event("look"));
});

async function showPrepared() {
  const prepared = document.getElementById("prepared");
  const note = document.getElementById("prepared-note");
  if (!state.look) {
    prepared.getContext("2d").clearRect(0, 0, prepared.width, prepared.height);
    note.textContent = "";
    return;
  }
  const image = new Image();
  image.src = `data:image/png;base64,${state.look.input}`;
  await image.decode();
  prepared.width = image.width;
  prepared.height = image.height;
  prepared.getContext("2d").drawImage(image, 0, 0);
  note.textContent = state.look.label === null
    ? `${state.look.source}: ${image.width}×${image.height}, prepared as '${state.info.preprocess}', as cnnlab predict prepares a file`
    : `${state.look.source} of the run's data set, true class ${state.look.label}: ${image.width}×${image.height}`;
  await showOverlay();
}

async function showOverlay() {
  const canvas = document.getElementById("overlay");
  const kind = document.getElementById("overlay-kind").value;
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  if (!kind || !state.look) return;
  try {
    const maps = await imageRequest("attribution");
    const [, h, w] = state.info.in_shape;
    overlay(canvas, await decode(maps[kind]), h, w);
    say("", "overlay");
  } catch (error) {
    say(error.message, "overlay");
  }
}
document.getElementById("overlay-kind").addEventListener("change", showOverlay);

const IN_PLACE = 20;  // up to this many classes, every class has its own place: bars that never move while drawing

function showBars() {
  drawBars(document.getElementById("bars"), state.failed
    ? "No answer: this image could not be read (the message above says why). Draw, drop or pick another."
    : "Draw, drop or pick an image.");
}

// The answer in ``bars`` (``hint`` where there is none): with up to 20 classes every class in its own place (the
// top one marked), so that the bars grow and shrink as a drawing changes instead of changing places; beyond that
// the 10 most probable, in order. The Teach view's answer is drawn so too.
export function drawBars(bars, hint) {
  if (!state.look) {
    bars.replaceChildren(el("p", { class: "hint", text: hint }));
    return;
  }
  const predictions = state.look.predictions;
  const top = predictions[0].class;
  const shown = predictions.length <= IN_PLACE ? [...predictions].sort((a, b) => a.class - b.class) : predictions.slice(0, 10);
  bars.replaceChildren(...shown.map((p) => el("div", {
    class: p.class === top ? "bar top" : "bar", "data-label": p.label, "data-class": p.class, "data-probability": p.probability },
  el("span", { class: "name", text: p.label }),
  el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * p.probability).toFixed(1)}%` })),
  el("span", { class: "pct", text: `${(100 * p.probability).toFixed(1)}%` }))));
}

bus.addEventListener("look", () => { showBars(); showPrepared(); });
bus.addEventListener("run", () => {  // the drawing stays: the next run looks at it too
  document.getElementById("draw-box").hidden = state.info.preprocess !== "digit";
  document.getElementById("clear").hidden = state.info.preprocess !== "digit";
});
