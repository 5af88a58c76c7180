"""The browser viewer served at ``/``: open an image, drag a box or click points, see the mask.

One self-contained page (no external scripts, so it works offline): the image is uploaded to
``POST /images`` (several DICOM files picked at once are zipped in the page: one series), slices
are fetched from ``display.png``; each box or point list is sent to ``POST /images/{id}/segment``
and the returned mask is drawn over the image. For a volume, the slider or the mouse wheel moves
through the slices and "propagate" segments the whole volume from the prompt on the current slice
(``POST /images/{id}/propagate``); masks download as a PNG (one slice) or a zip of PNGs (volume).
When the server has a PACS (``GET /pacs`` answers: ``medfm.serve.pacs_routes``) a panel searches
its studies, opens a series and stores the masks back as a DICOM-SEG.

Opened as ``/#token=SECRET`` the page sends ``Authorization: Bearer SECRET`` with every request
(so it is a ``fetch``, never an ``<img src>``) and ``X-Medfm-Client: viewer`` with every
state-changing one; the token is then taken out of the address bar and kept for the tab only.
"""

VIEWER_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>medfm interactive segmentation</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1rem; color: #222; }
  #bar { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; margin-bottom: .5rem; }
  #stage { position: relative; display: inline-block; border: 1px solid #999; }
  canvas { display: block; max-width: 95vw; cursor: crosshair; }
  #status { font-size: .9rem; color: #555; }
  #pacsbar { display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; margin-bottom: .5rem; }
  #pacsbar select { max-width: 22rem; }
  .err { color: #b00020 !important; }
  [hidden] { display: none !important; }  /* also for the flex boxes */
</style>
</head>
<body>
<h1>medfm &middot; interactive segmentation <small>({{MODEL}})</small></h1>
<div id="bar">
  <input type="file" id="file" multiple aria-label="image file, or the files of one DICOM series">
  <label id="slicebox" hidden>slice <input type="range" id="slice" min="0" value="0"> <span id="sliceno"></span></label>
  <label><input type="radio" name="mode" value="box" checked> box (drag)</label>
  <label><input type="radio" name="mode" value="points"> points (click inside, shift-click outside)</label>
  <button id="clear">clear</button>
  <button id="propagate" hidden title="segment the whole volume from the prompt on this slice">propagate through volume</button>
  <a id="save" download="mask.png" hidden>download mask</a>
  <a id="savevol" download="masks.zip" hidden title="one PNG per slice with a mask">download volume masks (.zip)</a>
</div>
<div id="pacsbar" hidden>
  <b>PACS</b> <span id="pacsurl"></span>
  <input id="pacsq" size="14" placeholder="patient ID (* ok)" aria-label="patient ID to search for">
  <button id="pacssearch">search studies</button>
  <select id="studies" aria-label="study"></select>
  <select id="series" aria-label="series"></select>
  <button id="pacsopen" disabled>open series</button>
  <label id="storebox" hidden>segment <input id="segname" size="10" value="mask" aria-label="segment name">
    <button id="pacsstore">store masks to PACS (DICOM-SEG)</button></label>
</div>
<div id="stage"><canvas id="view" width="512" height="512"></canvas></div>
<p id="status" data-state="idle">Open a PNG, JPEG, TIFF, DICOM, NIfTI or NRRD file, the files of one DICOM series, or a .zip of one series.</p>
<script>
"use strict";
const view = document.getElementById("view"), ctx = view.getContext("2d");
const status = document.getElementById("status"), save = document.getElementById("save");
const savevol = document.getElementById("savevol");
const slider = document.getElementById("slice"), sliceno = document.getElementById("sliceno");
let imageId = null, info = null, z = 0, base = null, mask = null, box = null, drag = null, origin = null;
let points = [], labels = [];
let masks = {};  // slice -> base64 mask PNG shown there (the last segment or propagation)
let shown = 0;   // counts slice requests: a late answer for a slice no longer wanted is dropped

// the token: from #token=... (then out of the address bar and history), else kept for this tab
let token = null;
function readToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    try { token = decodeURIComponent(m[1]); } catch (e) { token = m[1]; }  // a stray % stays as typed
    try { sessionStorage.setItem("medfm-token", token); } catch (e) { /* storage off: keep it in memory */ }
    history.replaceState(null, "", location.pathname + location.search);
  } else if (token === null) {
    try { token = sessionStorage.getItem("medfm-token"); } catch (e) { token = null; }
  }
}
readToken();
window.addEventListener("hashchange", readToken);  // a new #token=... pasted into this tab

function say(text, state) {  // state: "ok" (done), "busy" or "error"
  status.textContent = text; status.className = state === "error" ? "err" : ""; status.dataset.state = state || "ok";
}
function mode() { return document.querySelector("input[name=mode]:checked").value; }
function at(ev) {  // the pointer in image pixels, kept inside the image
  const r = view.getBoundingClientRect();
  const x = (ev.clientX - r.left) * view.width / r.width, y = (ev.clientY - r.top) * view.height / r.height;
  return [Math.min(Math.max(x, 0), view.width - 0.5), Math.min(Math.max(y, 0), view.height - 0.5)];
}
async function call(url, opts) {  // fetch with the token (and the viewer's header when it changes state)
  opts = Object.assign({method: "GET"}, opts || {});
  const headers = Object.assign({}, opts.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  if (opts.method !== "GET" && opts.method !== "HEAD") headers["X-Medfm-Client"] = "viewer";
  opts.headers = headers; opts.credentials = "omit"; opts.cache = "no-store";
  const res = await fetch(url, opts);
  const type = res.headers.get("content-type") || "";
  if (!res.ok) {
    let detail = res.statusText;
    if (type.includes("json")) { try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON after all */ } }
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    if (res.status === 401 || res.status === 403) detail += token ? " (is the token right?)" : " (open the viewer as /#token=YOUR_TOKEN)";
    throw new Error(`${res.status}: ${detail}`);
  }
  return type.includes("json") ? res.json() : res.blob();
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
function b64bytes(b64) { const s = atob(b64), out = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i); return out; }
async function tint(png) {  // the 0/255 mask PNG -> a red overlay with a transparent background
  const img = await createImageBitmap(new Blob([b64bytes(png)], {type: "image/png"}));
  const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
  const g = c.getContext("2d"); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height);
  for (let i = 0; i < d.data.length; i += 4) {
    const on = d.data[i] > 127;
    d.data[i] = 255; d.data[i + 1] = 40; d.data[i + 2] = 40; d.data[i + 3] = on ? 255 : 0;
  }
  g.putImageData(d, 0, 0); return c;
}

// a zip with the files stored as they are (no compression): several DICOM files upload as one series,
// and a propagated volume downloads as one file of per-slice PNGs
const CRC = (() => { const t = new Uint32Array(256); for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[n] = c >>> 0; } return t; })();
function crc32(b) { let c = 0xffffffff; for (let i = 0; i < b.length; i++) c = CRC[(c ^ b[i]) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; }
function zipStored(files) {  // files: [[name, Uint8Array]] -> Blob
  const enc = new TextEncoder(), parts = [], central = [];
  let offset = 0;
  for (const [name, data] of files) {
    const fname = enc.encode(name), crc = crc32(data);
    const head = new DataView(new ArrayBuffer(30));
    head.setUint32(0, 0x04034b50, true); head.setUint16(4, 20, true); head.setUint16(6, 0x0800, true);
    head.setUint16(8, 0, true); head.setUint16(10, 0, true); head.setUint16(12, 33, true);
    head.setUint32(14, crc, true); head.setUint32(18, data.length, true); head.setUint32(22, data.length, true);
    head.setUint16(26, fname.length, true); head.setUint16(28, 0, true);
    const cd = new DataView(new ArrayBuffer(46));
    cd.setUint32(0, 0x02014b50, true); cd.setUint16(4, 20, true); cd.setUint16(6, 20, true); cd.setUint16(8, 0x0800, true);
    cd.setUint16(10, 0, true); cd.setUint16(12, 0, true); cd.setUint16(14, 33, true);
    cd.setUint32(16, crc, true); cd.setUint32(20, data.length, true); cd.setUint32(24, data.length, true);
    cd.setUint16(28, fname.length, true); cd.setUint32(42, offset, true);
    parts.push(head.buffer, fname, data); central.push(cd.buffer, fname);
    offset += 30 + fname.length + data.length;
  }
  const size = central.reduce((s, p) => s + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, size, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end.buffer], {type: "application/zip"});
}
function setLink(a, blob) { if (a.href.startsWith("blob:")) URL.revokeObjectURL(a.href); a.href = URL.createObjectURL(blob); a.hidden = false; }

function send(action) {  // the current slice's box and points to images/{id}/{action}
  const prompt = {slice: z};
  if (box) prompt.box = box.map(Math.round);
  if (points.length) { prompt.points = points; prompt.labels = labels; }
  return call(`images/${encodeURIComponent(imageId)}/${action}`, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(prompt)});
}
async function showMask() {  // the mask kept for slice z (if any) over the image, and its download link
  showStore();
  mask = masks[z] ? await tint(masks[z]) : null;
  if (masks[z]) {
    save.download = info.depth > 1 ? `mask_slice_${String(z).padStart(3, "0")}.png` : "mask.png";
    setLink(save, new Blob([b64bytes(masks[z])], {type: "image/png"}));
  } else { save.hidden = true; }
  draw();
}
async function segment() {
  if (!imageId || (!box && !points.length)) return;
  try {
    say("segmenting ...", "busy");
    const at_z = z, r = await send("segment");
    if (at_z !== z) return;  // the user moved on meanwhile
    masks[z] = r.mask_png;
    await showMask();
    const mm = r.area_mm2 != null ? `, ${r.area_mm2.toFixed(1)} mm\\u00b2` : " (no pixel spacing in the file)";
    say(`mask: ${r.area_px} px${mm}; predicted IoU ${r.score == null ? "-" : r.score.toFixed(3)}; ${(1000 * r.seconds).toFixed(0)} ms`);
  } catch (e) { say(e.message, "error"); }
}
function clearPrompts() { box = null; points = []; labels = []; drag = null; }
async function showSlice() {  // fetch and draw slice z; the prompts start again on a new slice
  clearPrompts();
  sliceno.textContent = `${z + 1} / ${info.depth}`;
  slider.value = z; view.dataset.slice = z;
  const ticket = ++shown, want = z;
  try {
    const png = await call(`images/${encodeURIComponent(imageId)}/display.png?slice=${want}`);
    const img = await createImageBitmap(png);
    if (ticket !== shown) return;  // a later slice was asked for meanwhile
    base = img; view.width = info.width; view.height = info.height;
    await showMask();
    view.dataset.shown = want;
  } catch (e) { if (ticket === shown) say(e.message, "error"); }
}
function goTo(k) {
  if (!info || info.depth < 2) return;
  k = Math.min(Math.max(k, 0), info.depth - 1);
  if (k !== z) { z = k; showSlice(); }
}
async function opened(got) {  // an image is held by the server (uploaded, or opened from the PACS): show it
  info = got; imageId = info.id; z = info.slice; masks = {}; base = null; mask = null;
  save.hidden = true; savevol.hidden = true; showStore();
  document.getElementById("slicebox").hidden = info.depth < 2;
  document.getElementById("propagate").hidden = info.depth < 2;
  slider.max = info.depth - 1;
  await showSlice();
  const mm = info.spacing_mm ? `, ${info.spacing_mm.map((v) => v.toFixed(3)).join(" x ")} mm pixels` : "";
  say(`${info.name}: ${info.width} x ${info.height}` + (info.depth > 1 ? ` x ${info.depth} slices` : "") + `${mm}. Drag a box or click points.`);
}
async function readFiles(list) {  // one file as it is; several (the files of one DICOM series) as a zip
  if (list.length === 1) return [list[0].name, list[0]];
  const files = [];
  for (const f of list) files.push([f.name.replace(/[\\\\/]/g, "_"), new Uint8Array(await f.arrayBuffer())]);
  return ["series.zip", zipStored(files)];
}
// the PACS panel (only when the server was started with a PACS: GET pacs answers)
const pacsbar = document.getElementById("pacsbar"), studiesSel = document.getElementById("studies");
const seriesSel = document.getElementById("series"), pacsopen = document.getElementById("pacsopen");
const storebox = document.getElementById("storebox");
function option(sel, value, text) { const o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o); }
function showStore() { storebox.hidden = !(info && info.series && Object.keys(masks).length); }
call("pacs").then((r) => { document.getElementById("pacsurl").textContent = r.url; pacsbar.hidden = false; }).catch(() => {});
async function listSeries() {
  seriesSel.replaceChildren(); pacsopen.disabled = true;
  if (!studiesSel.value) return;
  const rows = await call(`pacs/studies/${encodeURIComponent(studiesSel.value)}/series`);
  rows.forEach((r) => option(seriesSel, r.SeriesInstanceUID,
    `${r.Modality || "?"} #${r.SeriesNumber || "-"} ${r.SeriesDescription || ""} (${r.NumberOfSeriesRelatedInstances || "?"} images)`));
  pacsopen.disabled = !rows.length;
}
document.getElementById("pacssearch").addEventListener("click", async () => {
  try {
    say("searching the PACS ...", "busy");
    const q = document.getElementById("pacsq").value.trim();
    const rows = await call("pacs/studies" + (q ? `?PatientID=${encodeURIComponent(q)}` : ""));
    studiesSel.replaceChildren();
    rows.forEach((r) => option(studiesSel, r.StudyInstanceUID, [r.StudyDate, r.PatientID, r.PatientName, r.StudyDescription,
      `(${r.ModalitiesInStudy || "?"}, ${r.NumberOfStudyRelatedSeries || "?"} series)`].filter((x) => x).join(" ")));
    await listSeries();
    say(`${rows.length} ${rows.length === 1 ? "study" : "studies"} found` + (rows.length ? ": pick a series and open it." : "."));
  } catch (e) { say(e.message, "error"); }
});
studiesSel.addEventListener("change", () => listSeries().catch((e) => say(e.message, "error")));
pacsopen.addEventListener("click", async () => {
  if (!seriesSel.value) return;
  try {
    say("retrieving the series from the PACS and embedding ...", "busy");
    await opened(await call("pacs/open", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({study: studiesSel.value, series: seriesSel.value})}));
  } catch (e) { say(e.message, "error"); }
});
document.getElementById("pacsstore").addEventListener("click", async () => {
  const names = Object.keys(masks).map(Number).sort((a, b) => a - b);
  if (!info || !info.series || !names.length) { say("segment or propagate first", "error"); return; }
  try {
    say("storing the masks as DICOM-SEG on the PACS ...", "busy");
    const body = zipStored(names.map((k) => [`mask_slice_${String(k).padStart(3, "0")}.png`, b64bytes(masks[k])]));
    const name = document.getElementById("segname").value.trim() || "mask";
    const r = await call(`pacs/store/${encodeURIComponent(imageId)}?segment=${encodeURIComponent(name)}`, {
      method: "POST", headers: {"Content-Type": "application/octet-stream"}, body: body});
    say(`stored on the PACS: DICOM-SEG "${name}", ${r.frames} frames on ${r.slices.length} slices, ${r.voxels} voxels (series ${r.seg_series_instance_uid})`);
  } catch (e) { say(e.message, "error"); }
});
document.getElementById("propagate").addEventListener("click", async () => {
  if (!imageId || (!box && !points.length)) { say("draw a box or click points on a key slice first", "error"); return; }
  try {
    say("propagating through the volume ...", "busy");
    const r = await send("propagate");
    masks = Object.assign({}, r.masks);
    await showMask();
    const names = Object.keys(masks).map(Number).sort((a, b) => a - b);
    setLink(savevol, zipStored(names.map((k) => [`mask_slice_${String(k).padStart(3, "0")}.png`, b64bytes(masks[k])])));
    const ml = r.volume_ml != null ? `, ${r.volume_ml.toFixed(2)} mL` : " (no spacing in the file)";
    say(`propagated: ${names.length} slices, ${r.voxels} voxels${ml}; ${r.seconds.toFixed(1)} s. Scroll to review.`);
  } catch (e) { say(e.message, "error"); }
});
document.getElementById("file").addEventListener("change", async (ev) => {
  const list = Array.from(ev.target.files); if (!list.length) return;
  try {
    say(list.length > 1 ? `uploading ${list.length} files as one series and embedding ...` : "uploading and embedding ...", "busy");
    const [name, body] = await readFiles(list);
    await opened(await call(`images?name=${encodeURIComponent(name)}`, {
      method: "POST", headers: {"Content-Type": "application/octet-stream"}, body: body}));
  } catch (e) { ev.target.value = ""; say(e.message, "error"); }  // emptied: picking the same file again retries
});
slider.addEventListener("input", () => goTo(Number(slider.value)));
view.addEventListener("wheel", (ev) => {  // scroll through the slices, as in a PACS viewer
  if (!info || info.depth < 2) return;
  ev.preventDefault(); goTo(z + (ev.deltaY > 0 ? 1 : -1));
}, {passive: false});
view.addEventListener("mousedown", (ev) => {
  if (base && mode() === "box" && ev.button === 0) { origin = at(ev); drag = [origin[0], origin[1], origin[0], origin[1]]; }
});
window.addEventListener("mousemove", (ev) => {  // on the window: a drag may leave the canvas
  if (!drag) return; const p = at(ev);
  drag = [Math.min(origin[0], p[0]), Math.min(origin[1], p[1]), Math.max(origin[0], p[0]), Math.max(origin[1], p[1])];
  draw();
});
window.addEventListener("mouseup", () => {
  if (!drag) return;
  const b = drag; drag = null;
  if (b[2] - b[0] >= 2 && b[3] - b[1] >= 2) { box = b; segment(); } else { draw(); }
});
view.addEventListener("click", (ev) => {
  if (!base || mode() !== "points") return;
  points.push(at(ev)); labels.push(ev.shiftKey ? 0 : 1); segment();
});
document.getElementById("clear").addEventListener("click", () => {
  clearPrompts(); delete masks[z]; mask = null; save.hidden = true; showStore(); draw(); say("cleared");
});
</script>
</body>
</html>
"""
