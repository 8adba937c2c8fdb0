// Teach: Teachable Machine's loop on a network of your own. Make classes, give them examples (drawn, from the
// camera — a frame a click, a burst while held — or dropped files), train with `cnnlab train teach` (the server
// starts that very command), then try it live: what the drawing or the camera shows is looked at a few times a
// second, one request at a time, through the studio's own look, so the bars and the Inside view follow.
import { api, bus, el, look, say, state } from "../api.js";
import { sketchpad } from "../pad.js";
import { drawBars } from "../playground.js";
import { chart } from "../runs.js";

const LIVE = 250;  // ms between looks while trying it live: 4 a second at most, and never two at once
const BURST = 150;  // ms between camera frames while the button is held
const SHOWN = 60;  // thumbnails drawn per class, the newest; the rest are counted
const FRAME = 256;  // px: a camera frame is sent at most this long a side (the server keeps examples no larger)
const $ = (id) => document.getElementById(id);
const view = $("teach");
const pad = sketchpad($("teach-pad"));
let project = null;  // the project's answer from the server: classes, examples, runs, its training
let target = null;  // the class new examples go to
let queue = Promise.resolve();  // examples are sent one after another, in the order they were made
let stream = null;  // the camera, once started
let wasRunning = false, charted = "";

const url = (...parts) => `/api/teach/${parts.map(encodeURIComponent).join("/")}`;

// ---- the project and its classes ----------------------------------------------------------------------------
async function loadProjects(chosen) {
  const answer = await api("/api/teach");
  const picker = $("teach-pick");
  picker.replaceChildren(...answer.projects.map((name) => new Option(name, name)));
  const name = chosen || (project && project.name) || answer.projects[0];
  if (name) { picker.value = name; await openProject(name); }
  for (const id of ["teach-classes-panel", "teach-input", "teach-train", "teach-try"]) $(id).hidden = !name;
}

async function openProject(name) {
  project = await api(url(name));
  const names = project.classes.map((c) => c.name);
  if (!names.includes(target)) target = names[0] || null;
  showProject();
}

async function refresh() {
  if (project) await openProject(project.name).catch((error) => say(error.message, "teach"));
}

function showProject() {
  $("teach-command").textContent = project.command;
  $("teach-target").textContent = target || "… (add a class first)";
  $("teach-classes").replaceChildren(...project.classes.map((c) => {
    const pick = el("button", { type: "button", class: "link", "aria-pressed": String(c.name === target),
      text: c.name === target ? `${c.name} (adding here)` : `add to ${c.name}` });
    pick.addEventListener("click", () => { target = c.name; showProject(); });
    const remove = el("button", { type: "button", class: "link", text: "remove", "aria-label": `remove class ${c.name}` });
    remove.addEventListener("click", () => act(api(url(project.name, "classes", c.name), undefined, { method: "DELETE" })));
    const thumbs = c.examples.slice(-SHOWN).reverse().map((example) => {
      const drop = el("button", { type: "button", text: "×", "aria-label": `delete ${c.name} ${example}` });
      drop.addEventListener("click", () =>
        act(api(url(project.name, "classes", c.name, "examples", example), undefined, { method: "DELETE" })));
      return el("span", { class: "thumb" }, el("img", { src: url(project.name, "classes", c.name, "examples", example),
        alt: `${c.name} ${example}`, loading: "lazy" }), drop);
    });
    const more = c.examples.length > SHOWN ? [el("span", { class: "hint", text: `and ${c.examples.length - SHOWN} older` })] : [];
    return el("div", { class: c.name === target ? "teach-class target" : "teach-class", "data-class": c.name,
      "data-count": c.examples.length },
    el("div", { class: "class-head" }, el("strong", { text: c.name }), pick, remove,
      el("span", { class: "count", text: `${c.examples.length} example${c.examples.length === 1 ? "" : "s"}` })),
    el("div", { class: "thumbs" }, ...thumbs, ...more));
  }));
  showTraining();
}

async function act(request) {  // a change, then the project as it now is; a refusal is the message on top
  try {
    await request;
    say("", "teach");
  } catch (error) {
    say(error.message, "teach");
  }
  await refresh();
}

$("teach-pick").addEventListener("change", () => openProject($("teach-pick").value).catch((e) => say(e.message, "teach")));
$("teach-new-project").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const made = await api(`/api/teach?name=${encodeURIComponent($("teach-project-name").value)}`, new Blob([]));
    $("teach-project-name").value = "";
    say("", "teach");
    await loadProjects(made.name);
  } catch (error) { say(error.message, "teach"); }
});
$("teach-new-class").addEventListener("submit", async (event) => {
  event.preventDefault();
  const typed = $("teach-class-name").value;
  try {
    target = (await api(`${url(project.name, "classes")}?name=${encodeURIComponent(typed)}`, new Blob([]))).name;
    $("teach-class-name").value = "";
    say("", "teach");
  } catch (error) { say(error.message, "teach"); }
  await refresh();
});

// ---- examples: drawn, from the camera, from files -------------------------------------------------------------
// One example for the class chosen now, sent after those before it; the page's class cards follow.
function addExample(blob) {
  const where = url(project.name, "classes", target, "examples");
  view.dataset.sending = String(Number(view.dataset.sending || 0) + 1);
  queue = queue.then(async () => {
    try {
      await api(where, blob);
      say("", "teach");
    } catch (error) {
      say(error.message, "teach");
    }
    const left = Number(view.dataset.sending) - 1;
    view.dataset.sending = String(left);
    if (!left) await refresh();
  });
  return queue;
}

$("teach-add").addEventListener("click", async () => {
  if (!target || !pad.drawn) return;
  const blob = await pad.blob();
  pad.clear();
  await addExample(blob);
});
$("teach-clear").addEventListener("click", () => pad.clear());

async function frame() {  // the camera's picture now, as a PNG at most FRAME a side
  const video = $("teach-video");
  const scale = Math.min(1, FRAME / Math.max(video.videoWidth, video.videoHeight));
  const canvas = el("canvas", { width: Math.round(video.videoWidth * scale), height: Math.round(video.videoHeight * scale) });
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

$("teach-camera").addEventListener("click", async () => {
  if (stream) return;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
  } catch (error) {
    say(`The camera could not be started: ${error.message}`, "teach");
    return;
  }
  const video = $("teach-video");
  video.srcObject = stream;
  await video.play();
  video.hidden = $("teach-snap").hidden = false;
  $("teach-camera").hidden = true;
});

let holding = false, bursts = 0;
$("teach-snap").addEventListener("pointerdown", async () => {  // a frame now, then one every BURST ms while held
  holding = true;
  const burst = ++bursts;  // a click's burst may still be waiting when the next press begins: it ends there
  while (holding && burst === bursts && target) {
    const sent = addExample(await frame());
    await Promise.all([sent, new Promise((resolve) => setTimeout(resolve, BURST))]);
  }
});
for (const type of ["pointerup", "pointerleave", "pointercancel"]) $("teach-snap").addEventListener(type, () => { holding = false; });
$("teach-snap").addEventListener("click", async (event) => {  // the keyboard's Enter or Space: one frame
  if (event.detail === 0 && target) addExample(await frame());
});

const files = $("teach-files"), dropZone = $("teach-drop");
function addFiles(list) {
  for (const file of list) if (target) addExample(file);
}
files.addEventListener("change", () => { addFiles([...files.files]); files.value = ""; });
dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("over"); });
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("over");
  addFiles([...event.dataTransfer.files]);
});

// ---- training: `cnnlab train teach` on the server, followed as the Runs view follows a run -----------------
function startFrom() {  // the finished runs the learner may start from: any of their runs, a teach run included
  const picker = $("teach-from"), chosen = picker.value;
  const finished = (state.runs ? state.runs.runs : []).filter((r) => r.finished);
  const options = [new Option("scratch", ""), ...finished.map((r) => new Option(`${r.name} (${r.dataset}, ${r.model})`, r.name))];
  if (options.map((o) => o.value).join("\n") !== [...picker.options].map((o) => o.value).join("\n")) {
    picker.replaceChildren(...options);
    picker.value = finished.some((r) => r.name === chosen) ? chosen : "";
  }
  $("teach-freeze").disabled = !picker.value;
}
$("teach-from").addEventListener("change", startFrom);

function showTraining() {
  startFrom();
  const training = project.training;
  const run = training && training.run && state.runs && state.runs.runs.find((r) => r.name === training.run);
  const running = Boolean(training && training.running);
  $("teach-start").hidden = running;
  $("teach-stop").hidden = !running;
  $("teach-resume").hidden = running || !project.resumable;
  const progress = run ? ` — epoch ${run.epochs} of ${run.of}` + (run.history.length
    ? `, validation accuracy ${run.history[run.history.length - 1].val_accuracy.toFixed(3)}` : "") : "";
  let text = project.runs.length ? `Trained before: ${project.runs.join(", ")}.` : "Not trained yet.", phase = "idle";
  if (running) [text, phase] = [`Training ${training.run || "(starting)"}${progress}`, "training"];
  else if (training && training.stopped) [text, phase] = [`Stopped: ${training.run} keeps its last finished epoch; Resume continues it.`, "stopped"];
  else if (training && training.error) [text, phase] = [training.error, "failed"];
  else if (training && training.exit_code === 0) [text, phase] = [`Trained ${training.run}${progress}. Try it below.`, "trained"];
  $("teach-status").textContent = text;
  $("teach-status").dataset.state = phase;
  $("teach-status").dataset.run = (training && training.run) || "";
  const key = run ? `${run.name}/${run.history.length}` : "";
  if (key !== charted && !view.hidden) {
    charted = key;
    $("teach-chart").replaceChildren();
    if (run && run.history.length) chart("teach-chart", "accuracy", [run]);
  }
  if (wasRunning && !running && training.exit_code === 0) openRun(training.run);  // ready to try
  wasRunning = running;
}

async function train(path) {
  try {
    project = await api(path, new Blob([]));
    say("", "teach");
    wasRunning = true;
    showProject();
  } catch (error) {
    say(error.message, "teach");
  }
}
$("teach-start").addEventListener("click", () => {
  const from = $("teach-from").value;
  const query = from ? `?${new URLSearchParams({ from_run: from, freeze_epochs: $("teach-freeze").value || "0" })}` : "";
  train(`${url(project.name, "train")}${query}`);
});
$("teach-resume").addEventListener("click", () => train(url(project.name, "resume")));
$("teach-stop").addEventListener("click", () => act(api(url(project.name, "stop"), new Blob([]))));

// ---- trying it live --------------------------------------------------------------------------------------------
function openRun(name) {  // the studio's run becomes ``name``: the bars, the playground and Inside all use it
  if (state.run === name) return Promise.resolve();
  return new Promise((done) => bus.dispatchEvent(new CustomEvent("choose", { detail: { name, done } })));
}

let inFlight = false, sent = null;
async function tryOnce() {
  const live = $("teach-live").checked, camera = $("teach-source").value === "camera";
  if (!live || inFlight || view.hidden || !project || !project.runs.length) return;
  if (!camera && (!pad.drawn || sent === pad.version)) return;  // a drawing is looked at once a change
  if (camera && !stream) return;
  inFlight = true;
  try {
    const latest = project.runs[project.runs.length - 1];
    await openRun(latest);
    const version = pad.version;
    await look({ blob: camera ? await frame() : await pad.blob() });
    sent = version;
    $("teach-bars").dataset.version = camera ? "camera" : String(version);
    $("teach-trying").textContent = `${latest} sees ${camera ? "the camera" : "your drawing"}:`;
  } finally {
    inFlight = false;
  }
}
setInterval(tryOnce, LIVE);
$("teach-live").addEventListener("change", () => { sent = null; if ($("teach-source").value === "camera") $("teach-camera").click(); });
$("teach-source").addEventListener("change", () => { sent = null; if ($("teach-source").value === "camera") $("teach-camera").click(); });
bus.addEventListener("look", () => drawBars($("teach-bars"), "Train, then draw or show the camera something with live on."));

// ---- following the view and the run list ------------------------------------------------------------------------
bus.addEventListener("view", () => {
  if (view.hidden) return;
  charted = "";
  if (!project) loadProjects().catch((error) => say(error.message, "teach")); else refresh();
});
bus.addEventListener("runs", () => { if (!view.hidden) refresh(); });
