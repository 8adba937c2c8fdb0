// What the detail views are drawn with: a map drawn big (one cell per value, its padding around it, a window
// and a cell marked on it, a cell chosen by pointer or arrow keys), and a table of numbers coloured by value.
import { el, fixed } from "../api.js";
import { colour, css, grey, ink } from "../heat.js";

const PADDING = [233, 235, 240];  // the grey of zero padding

// ``values`` from ``offset``: an (h, w) map, ``pad`` cells of padding around it. ``marks``: [{row, col, height,
// width, kind}] in the map's coordinates ("window" or "cell"). ``pick``: {current, preview(at), choose(at)}, at
// = {row, col} in the map, or null when the pointer leaves.
export function board({ values, offset = 0, h, w, limit, greyscale = false, pad = 0, marks = [], pick, label, id }) {
  const [rows, cols] = [h + 2 * pad, w + 2 * pad];
  const canvas = el("canvas", { class: "board-canvas", width: cols, height: rows, "aria-label": label });
  const context = canvas.getContext("2d");
  const image = context.createImageData(cols, rows);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
    const [y, x] = [r - pad, c - pad];
    const inside = y >= 0 && y < h && x >= 0 && x < w;
    const rgb = !inside ? PADDING : (greyscale ? grey : colour)(values[offset + y * w + x], limit);
    image.data.set([...rgb, 255], 4 * (r * cols + c));
  }
  context.putImageData(image, 0, 0);
  const box = el("div", { class: "board", id, style: `aspect-ratio:${cols}/${rows}` }, canvas,
    ...marks.map((m) => el("i", { class: `mark ${m.kind}`, "data-row": m.row, "data-col": m.col,
      style: `left:${100 * (m.col + pad) / cols}%;top:${100 * (m.row + pad) / rows}%;` +
             `width:${100 * (m.width || 1) / cols}%;height:${100 * (m.height || 1) / rows}%` })));
  if (pick) {
    pickable(box, { rows: h, cols: w, pad, label: `${label}: click a cell, or use the arrow keys`,
      current: () => pick.current, preview: pick.preview, choose: pick.choose });
  }
  return box;
}

// Pointer and keyboard over a grid of ``rows`` × ``cols`` cells drawn in ``node`` (``pad`` of them padding all
// round): the cell under the pointer is previewed (null once the pointer leaves), a click or Enter chooses it,
// the arrow keys move the chosen cell from ``current()``. Cells are {row, col} of the grid without its padding.
export function pickable(node, { rows, cols, pad = 0, label, current, preview, choose }) {
  node.classList.add("clickable");
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.setAttribute("aria-label", label);
  const clamp = (v, n) => Math.max(0, Math.min(n - 1, v));
  const at = (event) => {
    const frame = node.getBoundingClientRect();
    return { row: clamp(Math.floor((event.clientY - frame.top) / frame.height * (rows + 2 * pad)) - pad, rows),
             col: clamp(Math.floor((event.clientX - frame.left) / frame.width * (cols + 2 * pad)) - pad, cols) };
  };
  let last = "";
  node.addEventListener("pointermove", (event) => {
    const here = at(event), key = `${here.row},${here.col}`;
    if (key !== last) { last = key; preview(here); }
  });
  node.addEventListener("pointerleave", () => { last = ""; preview(null); });
  node.addEventListener("click", (event) => choose(at(event)));
  node.addEventListener("keydown", (event) => {
    const move = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[event.key];
    if (!move && event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault();
    const { row, col } = current() || { row: 0, col: 0 };
    choose(move ? { row: clamp(row + move[0], rows), col: clamp(col + move[1], cols) } : { row, col });
  });
}

// A table of numbers, each cell coloured by its value on the table's own scale, its text black or white to be
// read on that colour. ``padded``: cells in the padding, hatched. ``marked``: [row, col] outlined.
export function grid(rows, className, { padded, marked } = {}) {
  const table = el("table", { class: `cells ${className}` });
  const limit = Math.max(1e-12, ...rows.flat().map(Math.abs));
  rows.forEach((row, r) => table.append(el("tr", {}, ...row.map((v, c) => {
    const hatched = padded && padded[r][c];
    const rgb = hatched ? PADDING : colour(v, limit);
    const cell = el("td", { text: hatched ? "0" : short(v), title: String(v), "data-value": String(v),
      style: hatched ? undefined : `background:${css(rgb)};color:${ink(rgb)}` });
    if (hatched) cell.className = "padding";
    if (marked && marked[0] === r && marked[1] === c) cell.classList.add("here");
    return cell;
  }))));
  return table;
}

// Three significant digits, to fit a cell: 0.0148, -0.271, 12.3.
export function short(v) {
  const size = Math.abs(v);
  return v === 0 ? "0" : size >= 100 || size < 1e-3 ? v.toExponential(1) : v.toPrecision(3);
}

// A number with its label; ``data-value`` holds it in full for the tests.
export function number(id, label, value) {
  return el("span", { class: "number", id, "data-value": String(value) }, label ? `${label} ` : "", el("b", { text: fixed(value) }));
}

// A board's width on screen: 10 px a cell, at least ``least`` and at most ``most`` px.
export function sized(box, cells, least = 140, most = 280) {
  box.style.width = `${Math.max(least, Math.min(most, 10 * cells))}px`;
  return box;
}

export function figure(content, caption) {
  return el("figure", { class: "board-figure" }, content, el("figcaption", { text: caption }));
}
