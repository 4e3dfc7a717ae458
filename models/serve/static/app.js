// The page of `motion-ssl serve`: no framework, no build step, nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const state = {
  name: "", baseId: null, currentId: null, frames: [], pendingNext: null,
  image: null, arrows: [], clicks: [], drag: null, maskUrl: null, width: 0, height: 0,
};

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("Content-Type") || "";
  if (!response.ok) {
    const body = type.includes("json") ? await response.json() : { error: response.statusText };
    throw new Error(body.error || `HTTP ${response.status}`);
  }
  return type.includes("json") ? response.json() : response.blob();
}

function postJson(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function loadImage(id) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the image did not load"));
    img.src = `/api/image/${id}`;
  });
}

function draw() {
  if (!state.image) return;
  ctx.drawImage(state.image, 0, 0);
  const unit = Math.max(1, canvas.width / 384);
  ctx.lineWidth = 2 * unit;
  const arrows = mode() === "propagate" ? state.arrows.concat(state.drag ? [state.drag] : []) : [];
  for (const [x, y, dx, dy] of arrows) {
    drawArrow(x, y, dx, dy, unit);
  }
  for (const c of mode() === "annotate" ? state.clicks : []) {
    ctx.fillStyle = c.positive ? "#2ecc40" : "#ff4136";
    ctx.beginPath();
    ctx.arc(c.x, c.y, 3 * unit, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function drawArrow(x, y, dx, dy, unit) {
  ctx.strokeStyle = "#ffdc00";
  ctx.fillStyle = "#ffdc00";
  ctx.beginPath();
  ctx.arc(x, y, 2 * unit, 0, 2 * Math.PI);
  ctx.fill();
  if (Math.hypot(dx, dy) < 0.5) return;
  const angle = Math.atan2(dy, dx);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + dx, y + dy);
  for (const side of [-0.5, 0.5]) {
    ctx.moveTo(x + dx, y + dy);
    ctx.lineTo(x + dx - 6 * unit * Math.cos(angle + side), y + dy - 6 * unit * Math.sin(angle + side));
  }
  ctx.stroke();
}

async function showFrame(id) {
  state.image = await loadImage(id);
  canvas.width = state.image.naturalWidth;
  canvas.height = state.image.naturalHeight;
  draw();
}

async function setImage(reply, name) {
  Object.assign(state, {
    name, baseId: reply.id, currentId: reply.id, frames: [reply.id], pendingNext: null,
    arrows: [], clicks: [], maskUrl: null, width: reply.width, height: reply.height,
  });
  $("image-note").textContent = `${reply.width}×${reply.height}` + (reply.note ? ` (${reply.note})` : "");
  for (const id of ["flow", "next", "overlay"]) $(id).removeAttribute("src");
  $("frames").textContent = "1 frame";
  $("area").textContent = "";
  await showFrame(reply.id);
  document.body.dataset.ready = name;
}

function showLatency(reply, started) {
  const total = performance.now() - started;
  $("latency").textContent = `${reply.latency_ms} ms model, ${total.toFixed(0)} ms round trip`;
}

async function propagate() {
  const started = performance.now();
  const reply = await postJson("/api/propagate", { id: state.currentId, arrows: state.arrows });
  $("flow").src = reply.flow_png;
  $("next").src = reply.next_png;
  state.pendingNext = reply.next_id;
  showLatency(reply, started);
}

async function annotate() {
  const started = performance.now();
  const pick = (positive) => state.clicks.filter((c) => c.positive === positive).map((c) => [c.x, c.y]);
  const reply = await postJson("/api/annotate", { id: state.baseId, positive: pick(true), negative: pick(false) });
  $("overlay").src = reply.overlay_png;
  state.maskUrl = reply.mask_png;
  $("area").textContent = `mask: ${reply.area} px`;
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  showLatency(reply, started);
}

function run(task) {
  return async (...args) => {
    try {
      await task(...args);
      showMessage("");
    } catch (error) {
      showMessage(error.message);
    }
  };
}

function imagePoint(event) {
  // the image pixel under the pointer: content box (inside the border), scaled, floored
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left - canvas.clientLeft) * canvas.width) / canvas.clientWidth);
  const y = Math.floor(((event.clientY - rect.top - canvas.clientTop) * canvas.height) / canvas.clientHeight);
  return [Math.min(Math.max(x, 0), canvas.width - 1), Math.min(Math.max(y, 0), canvas.height - 1)];
}

canvas.addEventListener("contextmenu", (event) => event.preventDefault());
canvas.addEventListener("mousedown", (event) => {
  if (!state.image) return;
  const [x, y] = imagePoint(event);
  if (mode() === "annotate") {
    state.clicks.push({ x, y, positive: event.button === 0 && !event.shiftKey });
    draw();
    run(annotate)();
  } else if (event.button === 0) {
    state.drag = [x, y, 0, 0];
  }
});
canvas.addEventListener("mousemove", (event) => {
  if (!state.drag) return;
  const [x, y] = imagePoint(event);
  state.drag = [state.drag[0], state.drag[1], x - state.drag[0], y - state.drag[1]];
  draw();
});
window.addEventListener("mouseup", () => {
  if (!state.drag) return;
  state.arrows.push(state.drag);
  state.drag = null;
  draw();
  run(propagate)();
});

$("undo").addEventListener("click", run(async () => {
  if (mode() === "annotate") {
    state.clicks.pop();
    draw();
    return annotate();
  }
  state.arrows.pop();
  draw();
  return propagate();
}));

$("clear").addEventListener("click", run(async () => {
  if (mode() === "annotate") {
    state.clicks = [];
    state.maskUrl = null;
    $("overlay").removeAttribute("src");
    $("area").textContent = "";
  } else {
    Object.assign(state, { arrows: [], currentId: state.baseId, frames: [state.baseId], pendingNext: null });
    $("frames").textContent = "1 frame";
    for (const id of ["flow", "next"]) $(id).removeAttribute("src");
    await showFrame(state.baseId);
  }
  draw();
}));

$("step").addEventListener("click", run(async () => {
  if (!state.pendingNext) throw new Error("draw an arrow first");
  state.frames.push(state.pendingNext);
  state.currentId = state.pendingNext;
  state.arrows = state.arrows.map(([x, y, dx, dy]) => [
    Math.min(Math.max(Math.round(x + dx), 0), canvas.width - 1),
    Math.min(Math.max(Math.round(y + dy), 0), canvas.height - 1), dx, dy]);
  $("frames").textContent = `${state.frames.length} frames`;
  await showFrame(state.currentId);
  await propagate();
}));

function download(url, filename) {
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
}

$("gif").addEventListener("click", run(async () => {
  if (state.frames.length < 2) throw new Error("press Step at least once to make a sequence");
  const blob = await postJson("/api/gif", { ids: state.frames });
  download(URL.createObjectURL(blob), "sequence.gif");
}));

$("export-mask").addEventListener("click", run(async () => {
  if (!state.maskUrl) throw new Error("click on the object first");
  download(state.maskUrl, "mask.png");
}));

$("export-clicks").addEventListener("click", run(async () => {
  const pick = (positive) => state.clicks.filter((c) => c.positive === positive).map((c) => [c.x, c.y]);
  const record = { image: state.name, width: state.width, height: state.height, positive: pick(true), negative: pick(false) };
  const blob = new Blob([JSON.stringify(record, null, 2)], { type: "application/json" });
  download(URL.createObjectURL(blob), "clicks.json");
}));

for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    const annotating = mode() === "annotate";
    $("annotate-panels").hidden = !annotating;
    for (const el of document.querySelectorAll(".propagate-panel")) el.hidden = annotating;
    for (const el of document.querySelectorAll(".annotate-only")) el.hidden = !annotating;
    for (const el of document.querySelectorAll(".propagate-only")) el.hidden = annotating;
    draw();
  });
}

$("gallery").addEventListener("change", run(async (event) => {
  const name = event.target.value;
  if (!name) return;
  await setImage(await postJson("/api/gallery", { name }), name);
}));

$("upload").addEventListener("change", run(async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const reply = await api("/api/upload", { method: "POST", body: file });
  await setImage(reply, file.name);
}));

run(async () => {
  const info = await api("/api/info");
  $("run-info").textContent = `run ${info.run} · step ${info.step} · ${info.backbone} · ${info.device} · ` +
    `uploads up to ${info.limits.max_upload_mib} MiB / ${info.limits.max_mp} MP, scaled to ${info.limits.max_side} px`;
  for (const name of info.gallery) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    $("gallery").appendChild(option);
  }
  document.body.dataset.loaded = "1";
})();
