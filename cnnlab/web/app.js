// The studio's page: the run picker, kept up to date by polling the run list, the tabs, and the views (each its
// own module). Switching runs keeps the image: the new run looks at it at once.
import { api, bus, expectLook, forget, look, say, sayNothing, state } from "./api.js";
import "./playground.js";
import "./inside.js";
import "./theory.js";
import "./runs.js";
import "./views/teach.js";

const picker = document.getElementById("run");
const VIEWS = ["playground", "inside", "theory", "runs", "teach"];
const POLL = { follow: 1000, other: 3000 };  // ms between looks at the run list: Runs and Teach follow training closely
const FOLLOWING = ["runs", "teach"];

function showView() {
  const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "playground";
  for (const name of VIEWS) {
    document.getElementById(name).hidden = name !== view;
    const tab = document.querySelector(`#tabs a[data-view="${name}"]`);
    tab.classList.toggle("current", name === view);
    if (name === view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  bus.dispatchEvent(new Event("view"));
  if (FOLLOWING.includes(view) && document.body.dataset.ready) poll();  // now, not at the next tick
}

// The image the previous run looked at, as the next run should get it: the same upload or drawing; the same
// test image where both runs learnt the same data set; else the picture the previous run received.
async function carried(previous) {
  const input = state.input;
  if (!input || input.blob || (input.test !== undefined && previous && previous.dataset === state.info.dataset)) {
    return input;
  }
  if (!state.look) return null;
  const bytes = Uint8Array.from(atob(state.look.input), (c) => c.charCodeAt(0));
  return { blob: new Blob([bytes], { type: "image/png" }) };
}

async function chooseRun(name) {
  expectLook();  // between runs until the new run's answer (or none) is shown: the tests wait on body[data-busy]
  let looking = false;
  try {
    const previous = state.info;
    const info = await api(`/api/runs/${encodeURIComponent(name)}`);
    forget();
    state.run = name;
    state.info = info;
    sayNothing("runs");  // the errors of the run left behind, and of its images, go with it
    const input = await carried(previous);
    state.look = null;
    picker.value = name;
    const url = new URL(location.href);
    url.searchParams.set("run", name);
    history.replaceState(null, "", url);
    bus.dispatchEvent(new Event("run"));
    looking = Boolean(input);
    if (input) await look(input); else { state.input = null; bus.dispatchEvent(new Event("look")); }
    bus.dispatchEvent(new Event("view"));
  } finally {
    if (!looking) delete document.body.dataset.busy;  // a look, once sent, clears it itself
  }
}

// The finished runs in the picker, kept in step with the folder: a run that finishes while the page is open
// appears; if none was open, it opens.
async function showRuns(answer) {
  const ready = answer.runs.filter((r) => r.finished);
  const names = ready.map((r) => r.name);
  const shown = [...picker.options].map((o) => o.value);
  if (names.join("\n") !== shown.join("\n")) {
    picker.replaceChildren(...ready.map((r) => new Option(`${r.name} (${r.dataset}, ${r.model})`, r.name)));
    if (state.run) {
      if (!names.includes(state.run)) picker.prepend(new Option(`${state.run} (gone from the folder)`, state.run));
      picker.value = state.run;
    }
  }
  if (!names.length) {
    say("No finished run here yet: train one with `cnnlab train` or in the Teach tab; the Runs tab follows training.",
      "none");
    return;
  }
  say("", "none");
  if (!state.run) {
    const asked = new URL(location.href).searchParams.get("run");
    await chooseRun([asked, answer.default].find((n) => names.includes(n)) || names[names.length - 1])
      .catch((error) => say(error.message, "run"));
  }
}

// The run list, every second while the Runs view is open and every 3 s otherwise. A failed poll says so at
// the top of the page (and is retried); the next good one takes the message away.
async function poll() {
  try {
    const answer = await api("/api/runs", undefined, { timeout: 10000 });
    say("", "runs");
    state.runs = answer;
    await showRuns(answer);  // first: the Runs view starts from the run opened
    bus.dispatchEvent(new Event("runs"));
  } catch (error) {
    say(`The run list could not be read: ${error.message} (trying again)`, "runs");
  }
}

async function polling() {
  await poll();
  const following = FOLLOWING.some((view) => !document.getElementById(view).hidden);
  setTimeout(polling, following ? POLL.follow : POLL.other);
}

async function start() {
  showView();
  await polling();
  document.body.dataset.ready = "true";  // for the tests: the run list is read and the run, if any, loaded
}

// Another view opens a run (the Teach view, the run it trained): detail.done() once it is open.
bus.addEventListener("choose", (event) => {
  chooseRun(event.detail.name).then(event.detail.done, (error) => { say(error.message, "run"); event.detail.done(); });
});
picker.addEventListener("change", () => {
  chooseRun(picker.value).catch((error) => { say(error.message, "run"); picker.value = state.run || ""; });
});
window.addEventListener("hashchange", showView);
start();
