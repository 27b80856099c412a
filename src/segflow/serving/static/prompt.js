// segflow annotation page: click or drag on an image, see the mask of POST /v1/prompt at once,
// accept it as a class, download the accepted masks (index PNG, COCO JSON, LabelMe JSON).
// No dependencies; the API key is kept as the segment page keeps it.
"use strict";

const KEY_STORAGE = "segflow-api-key";
const DRAG_MIN_PX = 5;        // screen pixels a press must move to draw a box, not add a point
const POSITIVE = 1;
const NEGATIVE = 0;
const CURRENT_RGB = [47, 111, 222];  // the mask being prompted (the page's accent colour)
const EDGE_RGB = [255, 255, 255];    // its outline, drawn opaque so it shows on any colour
const ACCEPTED_ALPHA = 0.45;
const CURRENT_ALPHA = 0.55;
const $ = (id) => document.getElementById(id);

const state = {
  model: null,       // answer of GET /v1/model
  file: null,        // the File being annotated (sent again if the server evicted its key)
  image: null,       // ImageBitmap of it
  key: null,         // image_key of /v1/prompt
  width: 0,
  height: 0,
  points: [],        // [x, y, label] in image pixels
  box: null,         // [x0, y0, x1, y1] in image pixels
  history: [],       // "point" | "box": what Undo removes
  mask: null,        // {rle, pixels: Uint8Array (H*W), area, score} of the current prompt
  accepted: [],      // [{rle, classId, area}]
  drag: null,        // {start: [x, y], screen: [x, y], now: [x, y], button, moved}
  sequence: 0,       // the newest prompt request; older answers are dropped
  layers: { accepted: null, current: null, edge: null },  // canvases of the mask colours
};

function apiHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { "X-API-Key": key, ...extra } : extra;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.detail}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: apiHeaders() });
  if (response.status === 401) {
    $("key-box").hidden = false;
    $("model-info").textContent = "this server needs an API key";
    return;
  }
  if (!response.ok) {
    $("model-info").textContent = `model information unavailable (${await errorText(response)})`;
    return;
  }
  state.model = await response.json();
  $("key-box").hidden = !sessionStorage.getItem(KEY_STORAGE);
  const m = state.model;
  const prompt = m.prompt ? `prompting: ${m.prompt.backend}` : "prompting off";
  $("model-info").textContent = `${m.model_id} · ${m.num_classes} classes · ${prompt}`;
  fillClasses(m.classes, m.palette);
  if (!m.prompt) {
    setStatus("prompting is off on this server: start it with --prompt-backend grabcut (or sam:PATH)", true);
  }
}

function fillClasses(classes, palette) {
  const select = $("class");
  select.replaceChildren();
  classes.forEach((name, index) => {
    const option = document.createElement("option");
    option.value = String(index);
    option.textContent = name;
    option.dataset.rgb = palette[index].join(",");
    select.append(option);
  });
  if (classes.length > 1) select.value = "1";  // class 0 is usually the background
}

// --- COCO RLE (pycocotools' compressed counts, column-major) -> row-major 0/1 pixels ---------

function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function decodeRle(rle) {
  const [height, width] = rle.size;
  const pixels = new Uint8Array(height * width);
  let index = 0, value = 0, area = 0;
  for (const run of rleCounts(rle.counts)) {
    if (value) {
      for (let i = index; i < index + run; i += 1) {
        pixels[(i % height) * width + Math.floor(i / height)] = 1;
      }
      area += run;
    }
    index += run;
    value = 1 - value;
  }
  return { pixels, area };
}

// --- drawing -----------------------------------------------------------------------------

function colourLayer(masks) {
  // masks: [{pixels, rgb}] painted in order (later over earlier) into one canvas.
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(state.width, state.height);
  const data = image.data;
  for (const { pixels, rgb } of masks) {
    for (let i = 0; i < pixels.length; i += 1) {
      if (!pixels[i]) continue;
      data[4 * i] = rgb[0];
      data[4 * i + 1] = rgb[1];
      data[4 * i + 2] = rgb[2];
      data[4 * i + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function edgePixels(pixels) {
  // Mask pixels with a 4-neighbour outside the mask (or on the image border).
  const { width, height } = state;
  const edge = new Uint8Array(pixels.length);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const i = y * width + x;
      if (!pixels[i]) continue;
      edge[i] = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !pixels[i - 1] || !pixels[i + 1] || !pixels[i - width] || !pixels[i + width] ? 1 : 0;
    }
  }
  return edge;
}

function classRgb(classId) {
  return state.model ? state.model.palette[classId] : [200, 30, 30];
}

function render() {
  const canvas = $("canvas");
  if (!state.image) return;
  const ctx = canvas.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(state.image, 0, 0);
  if (state.layers.accepted) {
    ctx.globalAlpha = ACCEPTED_ALPHA;
    ctx.drawImage(state.layers.accepted, 0, 0);
  }
  if (state.layers.current) {
    ctx.globalAlpha = CURRENT_ALPHA;
    ctx.drawImage(state.layers.current, 0, 0);
  }
  ctx.globalAlpha = 1;
  if (state.layers.edge) ctx.drawImage(state.layers.edge, 0, 0);
  const unit = Math.max(1, state.width / canvas.getBoundingClientRect().width || 1);
  const box = state.drag && state.drag.moved ? dragBox(state.drag) : state.box;
  if (box) {
    ctx.setLineDash([6 * unit, 4 * unit]);
    ctx.lineWidth = 2 * unit;
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    ctx.setLineDash([]);
  }
  for (const [x, y, label] of state.points) {
    ctx.beginPath();
    ctx.arc(x, y, 5 * unit, 0, 2 * Math.PI);
    ctx.fillStyle = label === POSITIVE ? "#1e9e4a" : "#d93025";
    ctx.fill();
    ctx.lineWidth = 2 * unit;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  }
}

function rebuildAccepted() {
  const masks = state.accepted.map((item) => ({ pixels: item.pixels, rgb: classRgb(item.classId) }));
  state.layers.accepted = masks.length ? colourLayer(masks) : null;
}

function showAccepted() {
  const list = $("accepted");
  list.replaceChildren();
  state.accepted.forEach((item, index) => {
    const [r, g, b] = classRgb(item.classId);
    const li = document.createElement("li");
    li.dataset.classId = String(item.classId);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${r}, ${g}, ${b})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = state.model ? state.model.classes[item.classId] : String(item.classId);
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = `${item.area} px`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove mask ${index + 1} (${name.textContent})`);
    remove.addEventListener("click", () => {
      state.accepted.splice(index, 1);
      rebuildAccepted();
      showAccepted();
      render();
    });
    li.append(swatch, name, area, remove);
    list.append(li);
  });
  $("accepted-count").textContent = String(state.accepted.length);
  $("downloads").disabled = state.accepted.length === 0;
}

// --- server calls ------------------------------------------------------------------------

async function sendImage() {
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  const response = await fetch("/v1/prompt", { method: "POST", headers: apiHeaders(), body: form });
  if (!response.ok) throw new Error(`the image was refused: ${await errorText(response)}`);
  const answer = await response.json();
  state.key = answer.image_key;
  return answer;
}

async function openImage(file) {
  if (!state.model) {
    await loadModel();
    if (!state.model) {
      setStatus("cannot reach the server: enter the API key first", true);
      return;
    }
  }
  setStatus(`reading ${file.name}…`);
  state.file = file;
  const canvas = $("canvas");
  canvas.dataset.state = "busy";
  const answer = await sendImage();
  state.image = await createImageBitmap(file);
  state.width = answer.width;
  state.height = answer.height;
  canvas.width = answer.width;
  canvas.height = answer.height;
  state.accepted = [];
  rebuildAccepted();
  showAccepted();
  clearPrompt();
  $("tools").disabled = false;
  canvas.dataset.state = "ready";
  setStatus(`${file.name}: ${answer.width}×${answer.height}. Click the object or drag a box.`);
}

function promptBody() {
  const body = { image_key: state.key, points: state.points };
  if (state.box) body.box = state.box;
  return body;
}

async function postPrompt() {
  return fetch("/v1/prompt", {
    method: "POST",
    headers: apiHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify(promptBody()),
  });
}

async function updateMask() {
  const sequence = ++state.sequence;
  if (!state.points.length && !state.box) {
    setMask(null);
    return;
  }
  const canvas = $("canvas");
  canvas.dataset.state = "busy";
  const started = performance.now();
  let response = await postPrompt();
  if (response.status === 404) {  // the server's cache dropped the image: send it again
    await sendImage();
    response = await postPrompt();
  }
  if (sequence !== state.sequence) return;  // a newer prompt is on its way
  if (!response.ok) {
    canvas.dataset.state = "error";
    setStatus(`prompt failed: ${await errorText(response)}`, true);
    return;
  }
  const answer = await response.json();
  canvas.dataset.answers = String(Number(canvas.dataset.answers || 0) + 1);
  const best = answer.masks[0];
  const decoded = decodeRle(best.segmentation);
  setMask({ rle: best.segmentation, pixels: decoded.pixels, area: decoded.area, score: best.score });
  const ms = performance.now() - started;
  setStatus(`mask: ${decoded.area} px, score ${best.score.toFixed(2)}, ${ms.toFixed(0)} ms. Accept it or refine it.`);
}

function setMask(mask) {
  state.mask = mask;
  state.layers.current = mask ? colourLayer([{ pixels: mask.pixels, rgb: CURRENT_RGB }]) : null;
  state.layers.edge = mask ? colourLayer([{ pixels: edgePixels(mask.pixels), rgb: EDGE_RGB }]) : null;
  const canvas = $("canvas");
  canvas.dataset.maskPixels = mask ? String(mask.area) : "0";
  canvas.dataset.state = mask ? "mask" : "ready";
  $("accept").disabled = !mask;
  render();
}

function changed() {
  render();
  updateMask().catch((err) => setStatus(`error: ${err.message}`, true));
}

function clearPrompt() {
  state.points = [];
  state.box = null;
  state.history = [];
  state.sequence += 1;
  setMask(null);
}

function accept() {
  if (!state.mask) return;
  const classId = Number($("class").value);
  state.accepted.push({ rle: state.mask.rle, pixels: state.mask.pixels, area: state.mask.area, classId });
  rebuildAccepted();
  showAccepted();
  clearPrompt();
  setStatus(`accepted as ${state.model.classes[classId]}; ${state.accepted.length} mask(s). Prompt the next object.`);
}

function undo() {
  const last = state.history.pop();
  if (last === "point") state.points.pop();
  else if (last === "box") state.box = null;
  else return;
  changed();
}

function attachmentName(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = header.match(/filename="([^"]+)"/);
  return match ? match[1] : fallback;
}

async function download(format) {
  const body = {
    image_name: state.file.name,
    width: state.width,
    height: state.height,
    masks: state.accepted.map((item) => ({ segmentation: item.rle, class: item.classId })),
  };
  const response = await fetch(`/v1/prompt/export?format=${format}`, {
    method: "POST",
    headers: apiHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    setStatus(`export failed: ${await errorText(response)}`, true);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = attachmentName(response, `annotation.${format === "png" ? "png" : "json"}`);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  setStatus(`downloaded ${link.download}`);
}

// --- pointer input -------------------------------------------------------------------------

function imagePoint(event) {
  const rect = $("canvas").getBoundingClientRect();
  const x = ((event.clientX - rect.left) * state.width) / rect.width;
  const y = ((event.clientY - rect.top) * state.height) / rect.height;
  // points must lie inside the image: 0 <= x < W, 0 <= y < H
  return [Math.min(Math.max(x, 0), state.width - 0.01), Math.min(Math.max(y, 0), state.height - 0.01)];
}

function dragBox(drag) {
  const [ax, ay] = drag.start;
  const [bx, by] = drag.now;
  const clampX = (v) => Math.min(Math.max(v, 0), state.width);
  const clampY = (v) => Math.min(Math.max(v, 0), state.height);
  return [clampX(Math.min(ax, bx)), clampY(Math.min(ay, by)), clampX(Math.max(ax, bx)), clampY(Math.max(ay, by))];
}

function onPointerDown(event) {
  if (!state.image || (event.button !== 0 && event.button !== 2)) return;
  event.preventDefault();
  $("canvas").setPointerCapture(event.pointerId);
  const point = imagePoint(event);
  state.drag = { start: point, now: point, screen: [event.clientX, event.clientY], button: event.button, moved: false };
}

function onPointerMove(event) {
  const drag = state.drag;
  if (!drag) return;
  drag.now = imagePoint(event);
  const distance = Math.hypot(event.clientX - drag.screen[0], event.clientY - drag.screen[1]);
  if (drag.button === 0 && distance >= DRAG_MIN_PX) drag.moved = true;
  if (drag.moved) render();
}

function onPointerUp(event) {
  const drag = state.drag;
  if (!drag) return;
  state.drag = null;
  drag.now = imagePoint(event);
  if (drag.moved) {
    const box = dragBox(drag);
    if (box[2] - box[0] < 1 || box[3] - box[1] < 1) return render();
    if (state.box) state.history = state.history.filter((item) => item !== "box");
    state.box = box;
    state.history.push("box");
  } else {
    state.points.push([...drag.start, drag.button === 0 ? POSITIVE : NEGATIVE]);
    state.history.push("point");
  }
  changed();
}

function onKey(event) {
  if (!state.image || event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
  if (event.key === "a" || event.key === "Enter") accept();
  else if (event.key === "Escape") clearPrompt();
  else if (event.key === "z" || event.key === "Backspace") undo();
  else return;
  event.preventDefault();
}

function pick(file) {
  if (file) openImage(file).catch((err) => {
    $("canvas").dataset.state = "error";
    setStatus(`error: ${err.message}`, true);
  });
}

function wire() {
  const canvas = $("canvas");
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", () => { state.drag = null; render(); });
  document.addEventListener("keydown", onKey);
  $("file").addEventListener("change", (event) => pick(event.target.files[0]));
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    pick(event.dataTransfer.files[0]);
  });
  $("accept").addEventListener("click", accept);
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearPrompt);
  for (const button of document.querySelectorAll("#downloads button")) {
    button.addEventListener("click", () =>
      download(button.dataset.format).catch((err) => setStatus(`error: ${err.message}`, true)));
  }
  $("save-key").addEventListener("click", () => {
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value);
    state.model = null;
    loadModel();
  });
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
}

wire();
loadModel();
