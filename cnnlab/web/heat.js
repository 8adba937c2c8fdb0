// Activations arrive as 8-bit grey PNGs with their range (low, high): decoded here, drawn as heat maps, with
// the legend that says what a colour means and the text colour that stays readable on it.
import { el, fixed } from "./api.js";

export async function decode(layer) {
  const image = new Image();
  image.src = `data:image/png;base64,${layer.png}`;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, image.width, image.height).data;
  const values = new Float32Array(image.width * image.height);
  const scale = (layer.high - layer.low) / 255;
  for (let i = 0; i < values.length; i++) values[i] = layer.low + pixels[4 * i] * scale;
  return values;
}

// Blue for negative, white for 0, red for positive, ``limit`` and beyond at full colour.
export function colour(value, limit) {
  const t = Math.max(-1, Math.min(1, limit ? value / limit : 0));
  const fade = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? [255, fade, fade] : [fade, fade, 255];
}

// Grey from black (0) to white (``limit``), for images.
export function grey(value, limit) {
  const g = Math.round(255 * Math.max(0, Math.min(1, limit ? value / limit : 0)));
  return [g, g, g];
}

export const css = ([r, g, b]) => `rgb(${r},${g},${b})`;

// WCAG's relative luminance and contrast ratio.
export function luminance([r, g, b]) {
  const linear = (c) => (c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
}

// Black or white, whichever reads better on ``background``: one of them is always 4.58:1 or more (WCAG AA).
export function ink(background) {
  const l = luminance(background);
  return (l + 0.05) / 0.05 >= 1.05 / (l + 0.05) ? "#000" : "#fff";
}

// One (h, w) map of ``values`` starting at ``offset`` onto ``canvas``, one canvas pixel per value.
export function paint(canvas, values, offset, h, w, limit, greyscale = false) {
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const image = context.createImageData(w, h);
  const tint = greyscale ? grey : colour;
  for (let i = 0; i < h * w; i++) image.data.set([...tint(values[offset + i], limit), 255], 4 * i);
  context.putImageData(image, 0, 0);
}

// The largest |value| of ``count`` values from ``offset``.
export function largest(values, offset = 0, count = values.length) {
  let top = 0;
  for (let i = offset; i < offset + count; i++) top = Math.max(top, Math.abs(values[i]));
  return top;
}

// A grey map in [0, 1] over a picture: ``alpha`` per pixel, in yellow-red.
export function overlay(canvas, values, h, w) {
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const image = context.createImageData(w, h);
  const top = largest(values);
  for (let i = 0; i < h * w; i++) {
    const t = top ? Math.max(0, values[i]) / top : 0;
    image.data.set([255, Math.round(220 * (1 - t)), 0, Math.round(200 * t)], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

export function limitOf(layer) {
  return Math.max(Math.abs(layer.low), Math.abs(layer.high));
}

// What the colours mean: a strip from −limit (blue) through 0 (white) to +limit (red), or black to white.
export function legend(limit, greyscale = false, note = "") {
  const stops = greyscale ? "#000, #fff" : "rgb(0,0,255), #fff, rgb(255,0,0)";
  const ends = greyscale ? ["0", fixed(limit, 2)] : [`−${fixed(limit, 2)}`, "0", `+${fixed(limit, 2)}`];
  return el("span", { class: "legend", "data-limit": String(limit), title: note || undefined },
    el("span", { class: "legend-ticks" }, ...ends.map((text) => el("span", { text }))),
    el("span", { class: "legend-strip", style: `background:linear-gradient(to right, ${stops})` }),
    note ? el("span", { class: "legend-note", text: note }) : "");
}
