// Talking to the studio's server, and the state the views share: the run, the current image, its look.
export const bus = new EventTarget();
export const state = { run: null, info: null, input: null, look: null };

export async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : { method: "POST", body });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
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

export function say(text) {
  document.getElementById("message").textContent = text || "";
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

// Look at a new image; an answer that arrives after a newer request's is dropped.
export async function look(input) {
  state.input = input;
  const ticket = ++latest;
  expectLook();
  try {
    const answer = await imageRequest("look");
    if (ticket !== latest) return;
    state.input = answer.index !== undefined ? { test: answer.index } : input;  // a random pick, now fixed
    state.look = answer;
    say("");
    bus.dispatchEvent(new Event("look"));
  } catch (error) {
    if (ticket === latest) say(error.message);
  } finally {
    if (ticket === latest) delete document.body.dataset.busy;
  }
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}
