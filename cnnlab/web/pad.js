// A canvas to draw on with a mouse, a pen or a finger: black strokes on white, as MNIST's digits were written on
// paper. The playground and the Teach view each have one. ``version`` grows with every change (canvas[data-version]
// too): a page that predicts what is drawn sends a version once, and a test waits for the answer to a version.
export function sketchpad(canvas, { onStroke = () => {}, onEnd = () => {} } = {}) {
  const pen = canvas.getContext("2d");
  let drawing = false, last = null;
  const pad = {
    canvas, drawn: false, version: 0,
    clear() {
      pen.fillStyle = "#fff";
      pen.fillRect(0, 0, canvas.width, canvas.height);
      pad.drawn = false;
      changed();
    },
    blob() { return new Promise((resolve) => canvas.toBlob(resolve, "image/png")); },
  };
  function changed() {
    pad.version++;
    canvas.dataset.version = pad.version;
  }
  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  }
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();  // a drag that draws, not one that selects the page's text
    drawing = true;
    last = point(event);
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const here = point(event);
    pen.strokeStyle = "#000";
    pen.lineWidth = 22;  // px of the 280-px canvas: MNIST's stroke, 2 of its 28 pixels
    pen.lineCap = pen.lineJoin = "round";
    pen.beginPath();
    pen.moveTo(...last);
    pen.lineTo(...here);
    pen.stroke();
    last = here;
    pad.drawn = true;
    changed();
    onStroke();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => { if (drawing) { drawing = false; onEnd(); } });
  }
  pad.clear();
  return pad;
}
