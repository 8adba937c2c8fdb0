// Activations arrive as 8-bit grey PNGs with their range (low, high): decoded here, drawn as heat maps.
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

// One (h, w) map of ``values`` starting at ``offset`` onto ``canvas``, one canvas pixel per value.
export function paint(canvas, values, offset, h, w, limit, grey = false) {
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const image = context.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = grey ? Array(3).fill(Math.round(255 * Math.max(0, values[offset + i]) / (limit || 1))) : colour(values[offset + i], limit);
    image.data.set([r, g, b, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

// A grey map in [0, 1] over a picture: ``alpha`` per pixel, in yellow-red.
export function overlay(canvas, values, h, w) {
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const image = context.createImageData(w, h);
  let top = 0;
  for (const v of values) top = Math.max(top, Math.abs(v));
  for (let i = 0; i < h * w; i++) {
    const t = top ? Math.max(0, values[i]) / top : 0;
    image.data.set([255, Math.round(220 * (1 - t)), 0, Math.round(200 * t)], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

export function limitOf(layer) {
  return Math.max(Math.abs(layer.low), Math.abs(layer.high));
}
