// Talking to the studio's server, the messages on top of the page, and the state the views share: the run,
// the current image, its look.
export const bus = new EventTarget();
export const state = { run: null, info: null, input: null, look: null, failed: null, runs: null };
export const TIMEOUT = 30000;  // ms: a look on a busy machine takes a second at most; 30 s means the studio is stuck

// The JSON answer of GET ``path`` (POST with ``body``; or ``method``): the HTTP status is checked before the body is
// read as JSON, an error's own one line is thrown as it is, and a request that hangs is given up after ``timeout`` ms.
export async function api(path, body, { timeout = TIMEOUT, method = body === undefined ? "GET" : "POST" } = {}) {
  const where = path.split("?")[0];
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeout);
  let response, text;
  try {
    response = await fetch(path, { method, body, signal: abort.signal });
    text = await response.text();  // the body too within the time limit
  } catch (error) {
    throw new Error(abort.signal.aborted
      ? `the studio did not answer ${where} within ${timeout / 1000} s; is \`cnnlab studio\` still running?`
      : `the studio cannot be reached (${where}): is \`cnnlab studio\` still running?`);
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) {
    let message = `${where}: the studio answered ${response.status} ${response.statusText}`.trim();
    try { message = JSON.parse(text).error || message; } catch { /* not JSON: a proxy's page, say */ }
    throw new Error(message);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${where}: the studio's answer is not JSON (${response.headers.get("content-type") || "no type"})`);
  }
}

// The current image as a query and a body: an uploaded or drawn Blob, or a test image by its index.
export function imageRequest(path, params = {}) {
  const input = state.input || {};
  const query = new URLSearchParams(params);
  if (input.test !== undefined) query.set("test", input.test);
  if (input.pick) query.set("pick", "true");
  const url = `/api/runs/${encodeURIComponent(state.run)}/${path}?${query}`;
  return api(url, input.blob || new Blob([]));
}

// Messages by topic ("look", "runs", …): a topic's new message replaces its old one, "" removes it.
const messages = new Map();
export function say(text, topic = "page") {
  if (text) messages.set(topic, text); else messages.delete(topic);
  document.getElementById("message").replaceChildren(...[...messages].map(([key, line]) =>
    el("span", { "data-topic": key, text: line })));
}

// Every message but those of ``keep``: a run opened well leaves no error of another run behind.
export function sayNothing(...keep) {
  for (const topic of [...messages.keys()]) if (!keep.includes(topic)) say("", topic);
}

let latest = 0;
// Forget the looks in flight: their answers are for another run.
export function forget() {
  latest++;
}

// A look is on its way (body[data-busy] until its answer is shown: the tests wait on it).
export function expectLook() {
  document.body.dataset.busy = "true";
}

// Look at a new image; an answer that arrives after a newer request's is dropped. An image that fails takes
// the previous image's answer away with it: what stays on screen is never the answer to another image.
export async function look(input) {
  state.input = input;
  const ticket = ++latest;
  expectLook();
  try {
    const answer = await imageRequest("look");
    if (ticket !== latest) return;
    state.input = answer.index !== undefined ? { test: answer.index } : input;  // a random pick, now fixed
    state.look = answer;
    state.failed = null;
    say("", "look");
    bus.dispatchEvent(new Event("look"));
  } catch (error) {
    if (ticket !== latest) return;
    say(error.message, "look");
    state.input = state.look = null;
    state.failed = error.message;
    bus.dispatchEvent(new Event("look"));
  } finally {
    if (ticket === latest) delete document.body.dataset.busy;
  }
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// A number as the page shows it: ``digits`` decimals, or powers of ten where decimals would hide it.
export function fixed(value, digits = 4) {
  if (value === 0 || !Number.isFinite(value)) return String(value);
  const size = Math.abs(value);
  return size >= 1e6 || size < 10 ** -digits ? value.toExponential(digits - 1) : value.toFixed(digits);
}
