// Runs: the folder as a table (as `cnnlab runs` prints it), curves of up to two runs together (uPlot), the epochs
// of the first, its per-class scores and confusion matrix where `cnnlab evaluate` has run. Drawn from the run
// list that app.js polls (every second while this view is open), so a run that is training gains its epochs here
// as they end.
import { api, bus, el, say, state } from "./api.js";

const COLOURS = ["#1f77b4", "#c2410c"];
const selected = [];
let last = "", charts = [];

const score = (v) => (v === null || v === undefined ? "—" : v.toFixed(4));

function table(runs, damaged) {
  const head = el("tr", {}, ...["", "run", "recipe", "data", "epochs", "best val acc", "test acc", "time", "device", "date"]
    .map((h) => el("th", { text: h })));
  const rows = runs.map((r) => {
    const box = el("input", { type: "checkbox", "aria-label": `compare ${r.name}` });
    box.checked = selected.includes(r.name);
    box.addEventListener("change", () => {
      const at = selected.indexOf(r.name);
      if (at >= 0) selected.splice(at, 1); else { selected.push(r.name); if (selected.length > 2) selected.shift(); }
      render();
    });
    const status = r.finished ? "" : " (training)";
    return el("tr", { "data-run": r.name }, el("td", {}, box), el("td", { text: r.name + status }),
      el("td", { text: r.recipe }), el("td", { text: r.dataset }), el("td", { class: "epochs", text: `${r.epochs}/${r.of}` }),
      el("td", { text: score(r.best_val_accuracy) }), el("td", { text: score(r.test_accuracy) }),
      el("td", { text: `${r.seconds.toFixed(1)}s` }), el("td", { text: r.device || "?" }),
      el("td", { text: (r.created || "?").slice(0, 16).replace("T", " ") }));
  });
  const broken = damaged.map((d) => el("tr", { class: "damaged", "data-run": d.name }, el("td"),
    el("td", { text: `${d.name} (damaged)` }), el("td", { colspan: "8", text: d.error })));
  document.getElementById("runs-table").replaceChildren(head, ...rows, ...broken);
}

export function chart(id, metric, runs) {  // the Teach view draws its training's curve so too
  const box = document.getElementById(id);
  const epochs = Math.max(1, ...runs.map((r) => r.history.length));
  const x = Array.from({ length: epochs }, (_, i) => i + 1);
  const series = [{ label: "epoch" }], data = [x];
  runs.forEach((r, i) => {
    // validation: a solid line with a dot at each epoch; train: dashed, no dots — in the legend as on the chart
    for (const [prefix, dash] of [["val_", undefined], ["", [6, 4]]]) {
      series.push({ label: `${r.name} ${prefix ? "validation" : "train"}`, stroke: COLOURS[i], width: 2, dash,
        points: { show: !!prefix, size: 7, fill: COLOURS[i] }, class: prefix ? "validation" : "train",
        value: (u, v) => (v === null || v === undefined ? "—" : v.toFixed(4)) });
      data.push(x.map((e) => (r.history[e - 1] ? r.history[e - 1][prefix + metric] : null)));
    }
  });
  const options = { width: Math.max(200, box.clientWidth), height: 220, series,
    legend: { markers: { width: 3, dash: (u, i) => (u.series[i].dash ? "dashed" : "solid") } },
    scales: { x: { time: false } }, axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50] }, { label: metric }] };
  const plot = new uPlot(options, data, box);
  box.querySelectorAll(".u-legend tr.u-series").forEach((row, i) => {  // the dot of a validation line, in its colour
    if (i > 0) row.querySelector(".u-marker").style.color = series[i].stroke;
  });
  return plot;
}

function epochsTable(run) {
  const keys = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"];
  return el("div", { class: "scroll" }, el("table", { id: "epochs", "data-run": run.name },
    el("caption", { text: `Epochs of ${run.name}` }),
    el("tr", {}, ...keys.map((k) => el("th", { text: k.replace("_", " ") }))),
    ...run.history.map((row) => el("tr", { class: "epoch-row" }, ...keys.map((k) =>
      el("td", { text: k === "epoch" ? String(row[k]) : row[k].toFixed(k === "seconds" ? 1 : 4) }))))));
}

async function evaluation(run) {
  const box = document.getElementById("evaluation");
  if (!run.evaluated) {
    box.replaceChildren(epochsTable(run), el("p", { class: "hint", text: `Per-class scores and the confusion matrix appear once you run ` +
      `cnnlab evaluate on ${run.name}.` }));
    return;
  }
  const e = await api(`/api/runs/${encodeURIComponent(run.name)}/evaluation`);
  const classes = Object.keys(e.per_class);
  const scores = el("table", { id: "per-class" }, el("caption", { text: `Per class, test set (accuracy ${e.test_accuracy.toFixed(4)})` }),
    el("tr", {}, ...["class", "precision", "recall", "f1", "support"].map((h) => el("th", { text: h }))),
    ...classes.map((c) => el("tr", {}, el("td", { text: c }), ...["precision", "recall", "f1"].map((k) =>
      el("td", { text: e.per_class[c][k].toFixed(4) })), el("td", { text: String(e.per_class[c].support) }))));
  const top = Math.max(1, ...e.confusion.flat());
  const matrix = el("table", { id: "confusion", class: "confusion" }, el("caption", { text: "Confusion: true class (rows) by predicted class" }),
    el("tr", {}, el("th"), ...classes.map((c) => el("th", { text: c }))),
    ...e.confusion.map((row, i) => el("tr", {}, el("th", { text: classes[i] }), ...row.map((n) => {
      const shade = Math.round(255 * (1 - 0.8 * Math.sqrt(n / top)));
      return el("td", { text: String(n), style: `background:rgb(${shade},${shade},255)` + (shade < 140 ? ";color:#fff" : "") });
    }))));
  box.replaceChildren(epochsTable(run), el("div", { class: "scroll" }, scores), el("div", { class: "scroll" }, matrix));
}

// The Runs view drawn from the latest run list, if it changed (or the window's width did).
async function render() {
  const answer = state.runs;
  if (!answer || document.getElementById("runs").hidden) return;
  const text = JSON.stringify(answer) + selected.join("\n");
  if (text === last) return;
  last = text;
  document.getElementById("runs-dir").textContent = answer.runs_dir;
  const names = answer.runs.map((r) => r.name);
  for (let i = selected.length - 1; i >= 0; i--) if (!names.includes(selected[i])) selected.splice(i, 1);
  if (!selected.length && names.length) selected.push(names.includes(state.run) ? state.run : names[names.length - 1]);
  table(answer.runs, answer.damaged);
  const shown = selected.map((name) => answer.runs.find((r) => r.name === name));
  for (const c of charts) c.destroy();
  charts = shown.length ? [chart("chart-accuracy", "accuracy", shown), chart("chart-loss", "loss", shown)] : [];
  if (!shown.length) return;
  try {
    await evaluation(shown[0]);
    say("", "evaluation");
  } catch (error) {
    say(`${shown[0].name}'s evaluation could not be read: ${error.message}`, "evaluation");
  }
}

bus.addEventListener("runs", render);
bus.addEventListener("view", render);
window.addEventListener("resize", () => { last = ""; render(); });
