// The studio's page: the run picker, the tabs, and the views (each its own module).
import { api, bus, forget, say, state } from "./api.js";
import "./playground.js";
import "./inside.js";
import "./theory.js";
import { refresh } from "./runs.js";

const picker = document.getElementById("run");
const VIEWS = ["playground", "inside", "theory", "runs"];

function showView() {
  const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "playground";
  for (const name of VIEWS) {
    document.getElementById(name).hidden = name !== view;
    document.querySelector(`#tabs a[data-view="${name}"]`).classList.toggle("current", name === view);
  }
  if (view === "runs") refresh();
  bus.dispatchEvent(new Event("view"));
}

async function chooseRun(name) {
  state.run = name;
  state.info = await api(`/api/runs/${encodeURIComponent(name)}`);
  forget();
  state.input = state.look = null;
  const url = new URL(location.href);
  url.searchParams.set("run", name);
  history.replaceState(null, "", url);
  bus.dispatchEvent(new Event("run"));
  bus.dispatchEvent(new Event("look"));
  bus.dispatchEvent(new Event("view"));
}

async function start() {
  const { runs, default: opened } = await api("/api/runs");
  const ready = runs.filter((r) => r.finished);
  if (!ready.length) say("No finished run here yet: train one with `cnnlab train`; the Runs tab follows training.");
  picker.replaceChildren(...ready.map((r) => new Option(`${r.name} (${r.dataset}, ${r.model})`, r.name)));
  const asked = new URL(location.href).searchParams.get("run");
  const names = ready.map((r) => r.name);
  const name = [asked, opened].find((n) => names.includes(n)) || names[names.length - 1];
  if (name) {
    picker.value = name;
    await chooseRun(name);
  }
  showView();
  document.body.dataset.ready = "true";  // for the tests: the run is loaded
}

picker.addEventListener("change", () => chooseRun(picker.value).catch((error) => say(error.message)));
window.addEventListener("hashchange", showView);
start().catch((error) => say(error.message));
