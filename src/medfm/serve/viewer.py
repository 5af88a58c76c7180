"""The browser viewer served at ``/``: open an image, drag a box or click points, see the mask.

One self-contained page (no external scripts, so it works offline): the image is uploaded to
``POST /images``, drawn from ``display.png``; each box or point list is sent to
``POST /images/{id}/segment`` and the returned mask is drawn over the image. For a volume, a
slider moves through the slices and "propagate" segments the whole volume from the prompt on
the current slice (``POST /images/{id}/propagate``).
"""

VIEWER_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>medfm interactive segmentation</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1rem; color: #222; }
  #bar { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; margin-bottom: .5rem; }
  #stage { position: relative; display: inline-block; border: 1px solid #999; }
  canvas { display: block; max-width: 95vw; cursor: crosshair; }
  #status { font-size: .9rem; color: #555; }
  .err { color: #b00020 !important; }
</style>
</head>
<body>
<h1>medfm &middot; interactive segmentation <small>({{MODEL}})</small></h1>
<div id="bar">
  <input type="file" id="file" aria-label="image file">
  <label id="slicebox" hidden>slice <input type="range" id="slice" min="0" value="0"> <span id="sliceno"></span></label>
  <label><input type="radio" name="mode" value="box" checked> box (drag)</label>
  <label><input type="radio" name="mode" value="points"> points (click inside, shift-click outside)</label>
  <button id="clear">clear</button>
  <button id="propagate" hidden title="segment the whole volume from the prompt on this slice">propagate through volume</button>
  <a id="save" download="mask.png" hidden>download mask</a>
</div>
<div id="stage"><canvas id="view" width="512" height="512"></canvas></div>
<p id="status">Open a PNG, JPEG, TIFF, DICOM, NIfTI or NRRD file, or a .zip of one DICOM series.</p>
<script>
"use strict";
const view = document.getElementById("view"), ctx = view.getContext("2d");
const status = document.getElementById("status"), save = document.getElementById("save");
let imageId = null, info = null, z = 0, base = null, mask = null, box = null, drag = null, origin = null;
let points = [], labels = [], vol = {};  // vol: slice -> mask PNG of the last propagation
const slider = document.getElementById("slice"), sliceno = document.getElementById("sliceno");

function say(text, bad) { status.textContent = text; status.className = bad ? "err" : ""; }
function mode() { return document.querySelector("input[name=mode]:checked").value; }
function at(ev) {
  const r = view.getBoundingClientRect();
  return [(ev.clientX - r.left) * view.width / r.width, (ev.clientY - r.top) * view.height / r.height];
}
async function call(url, opts) {
  const res = await fetch(url, opts);
  const body = res.headers.get("content-type") || "";
  const data = body.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((data && data.detail) || res.statusText);
  return data;
}
function draw() {
  if (!base) return;
  ctx.drawImage(base, 0, 0);
  if (mask) { ctx.globalAlpha = 0.45; ctx.drawImage(mask, 0, 0); ctx.globalAlpha = 1; }
  ctx.lineWidth = 2;
  const b = drag || box;
  if (b) { ctx.strokeStyle = "#00c8ff"; ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]); }
  points.forEach((p, i) => {
    ctx.fillStyle = labels[i] ? "#00e676" : "#ff1744";
    ctx.beginPath(); ctx.arc(p[0], p[1], 4, 0, 2 * Math.PI); ctx.fill();
  });
}
function tint(png) {  // the 0/255 mask PNG -> a red overlay with transparent background
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
      const g = c.getContext("2d"); g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height);
      for (let i = 0; i < d.data.length; i += 4) {
        const on = d.data[i] > 127;
        d.data[i] = 255; d.data[i + 1] = 40; d.data[i + 2] = 40; d.data[i + 3] = on ? 255 : 0;
      }
      g.putImageData(d, 0, 0); resolve(c);
    };
    img.src = "data:image/png;base64," + png;
  });
}
function send(action) {  // the current slice's box and points to images/{id}/{action}
  const prompt = {slice: z};
  if (box) prompt.box = box.map(Math.round);
  if (points.length) { prompt.points = points; prompt.labels = labels; }
  return call(`images/${imageId}/${action}`, {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(prompt)});
}
async function segment() {
  if (!imageId || (!box && !points.length)) return;
  try {
    say("segmenting ...");
    const r = await send("segment");
    mask = await tint(r.mask_png);
    save.href = "data:image/png;base64," + r.mask_png; save.hidden = false;
    const mm = r.area_mm2 != null ? `, ${r.area_mm2.toFixed(1)} mm\u00b2` : " (no pixel spacing in the file)";
    say(`mask: ${r.area_px} px${mm}; predicted IoU ${r.score == null ? "-" : r.score.toFixed(3)}; ${(1000 * r.seconds).toFixed(0)} ms`);
    draw();
  } catch (e) { say(e.message, true); }
}
function clearPrompts() { mask = null; box = null; points = []; labels = []; save.hidden = true; }
function showSlice() {  // draw slice z of the current image; prompts start again on a new slice
  clearPrompts();
  sliceno.textContent = `${z + 1} / ${info.depth}`;
  const img = new Image();
  img.onload = async () => {
    base = img; view.width = info.width; view.height = info.height;
    if (vol[z]) mask = await tint(vol[z]);
    draw();
  };
  img.src = `images/${imageId}/display.png?slice=${z}`;
}
document.getElementById("propagate").addEventListener("click", async () => {
  if (!imageId || (!box && !points.length)) { say("draw a box or click points on a key slice first", true); return; }
  try {
    say("propagating through the volume ...");
    const r = await send("propagate");
    vol = r.masks;
    if (vol[z]) { mask = await tint(vol[z]); draw(); }
    const ml = r.volume_ml != null ? `, ${r.volume_ml.toFixed(2)} mL` : " (no spacing in the file)";
    say(`propagated: ${Object.keys(vol).length} slices, ${r.voxels} voxels${ml}; ${r.seconds.toFixed(1)} s. Move the slider to review.`);
  } catch (e) { say(e.message, true); }
});
document.getElementById("file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0]; if (!f) return;
  try {
    say("uploading and embedding ...");
    info = await call(`images?name=${encodeURIComponent(f.name)}`, {method: "POST", body: f});
    imageId = info.id; z = info.slice; vol = {};
    document.getElementById("slicebox").hidden = info.depth < 2;
    document.getElementById("propagate").hidden = info.depth < 2;
    slider.max = info.depth - 1; slider.value = z;
    showSlice();
    const mm = info.spacing_mm ? `, ${info.spacing_mm.map((v) => v.toFixed(3)).join(" x ")} mm pixels` : "";
    say(`${info.name}: ${info.width} x ${info.height}` + (info.depth > 1 ? ` x ${info.depth} slices` : "") + `${mm}. Drag a box or click points.`);
  } catch (e) { say(e.message, true); }
});
slider.addEventListener("input", () => { z = Number(slider.value); showSlice(); });
view.addEventListener("mousedown", (ev) => {
  if (base && mode() === "box") { origin = at(ev); drag = [origin[0], origin[1], origin[0], origin[1]]; }
});
view.addEventListener("mousemove", (ev) => {
  if (!drag) return; const p = at(ev);
  drag = [Math.min(origin[0], p[0]), Math.min(origin[1], p[1]), Math.max(origin[0], p[0]), Math.max(origin[1], p[1])];
  draw();
});
view.addEventListener("mouseup", () => {
  if (!drag) return;
  if (drag[2] - drag[0] >= 2 && drag[3] - drag[1] >= 2) box = drag;
  drag = null; segment();
});
view.addEventListener("click", (ev) => {
  if (!base || mode() !== "points") return;
  points.push(at(ev)); labels.push(ev.shiftKey ? 0 : 1); segment();
});
document.getElementById("clear").addEventListener("click", () => { clearPrompts(); draw(); say("cleared"); });
</script>
</body>
</html>
"""
