// segflow web page: upload an image, show the predicted mask over it. No dependencies.
"use strict";

const KEY_STORAGE = "segflow-api-key";
const $ = (id) => document.getElementById(id);

const state = {
  model: null,     // answer of GET /v1/model
  original: null,  // ImageBitmap of the uploaded image
  mask: null,      // ImageBitmap of the colour mask PNG
  maskUrl: null,   // object URL of the mask PNG (download link)
};

function apiHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { "X-API-Key": key } : {};
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
  $("model-info").textContent =
    `${m.model_id} · ${m.architecture || "model"} · ${m.num_classes} classes · ${m.backend}`;
}

function serverTiming(response) {
  const header = response.headers.get("Server-Timing") || "";
  const match = header.match(/total;dur=([\d.]+)/);
  return match ? Number(match[1]) : null;
}

async function segment(file) {
  if (!state.model) {
    await loadModel();
    if (!state.model) {
      setStatus("cannot reach the model: enter the API key first", true);
      return;
    }
  }
  setStatus(`segmenting ${file.name}…`);
  $("canvas").dataset.state = "busy";
  const started = performance.now();
  const response = await fetch("/v1/segment?format=png", {
    method: "POST",
    headers: { ...apiHeaders(), "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
  const latency = performance.now() - started;
  if (!response.ok) {
    setStatus(`segmentation failed: ${await errorText(response)}`, true);
    $("canvas").dataset.state = "error";
    return;
  }
  const maskBlob = await response.blob();
  state.original = await createImageBitmap(file);
  state.mask = await createImageBitmap(maskBlob);
  if (state.maskUrl) URL.revokeObjectURL(state.maskUrl);
  state.maskUrl = URL.createObjectURL(maskBlob);
  const download = $("download");
  download.href = state.maskUrl;
  download.download = file.name.replace(/\.[^.]*$/, "") + "_mask.png";
  download.setAttribute("aria-disabled", "false");
  $("controls").disabled = false;
  showLegend(classAreas(state.mask));
  render();
  const server = serverTiming(response);
  const serverText = server === null ? "" : ` (server ${server.toFixed(0)} ms)`;
  setStatus(`${file.name}: ${state.mask.width}×${state.mask.height}, latency ${latency.toFixed(0)} ms${serverText}`);
  $("status").dataset.latencyMs = latency.toFixed(1);
}

// Pixel count per class, by matching mask colours to the model's palette.
function classAreas(mask) {
  const canvas = new OffscreenCanvas(mask.width, mask.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(mask, 0, 0);
  const pixels = ctx.getImageData(0, 0, mask.width, mask.height).data;
  const classOfColour = new Map();
  state.model.palette.forEach(([r, g, b], index) => {
    const key = (r << 16) | (g << 8) | b;
    if (!classOfColour.has(key)) classOfColour.set(key, index);
  });
  const counts = new Array(state.model.num_classes).fill(0);
  for (let i = 0; i < pixels.length; i += 4) {
    const index = classOfColour.get((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    if (index !== undefined) counts[index] += 1;
  }
  return counts;
}

function showLegend(counts) {
  const total = counts.reduce((a, b) => a + b, 0) || 1;
  const legend = $("legend");
  legend.replaceChildren();
  counts.forEach((count, index) => {
    if (count === 0) return;
    const [r, g, b] = state.model.palette[index];
    const item = document.createElement("li");
    item.dataset.classId = String(index);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${r}, ${g}, ${b})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = state.model.classes[index];
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = `${((100 * count) / total).toFixed(1)} %`;
    item.append(swatch, name, area);
    legend.append(item);
  });
}

function render() {
  const canvas = $("canvas");
  if (!state.mask) return;
  canvas.width = state.mask.width;
  canvas.height = state.mask.height;
  const ctx = canvas.getContext("2d");
  const view = document.querySelector('input[name="view"]:checked').value;
  const opacity = Number($("opacity").value) / 100;
  ctx.globalAlpha = 1;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (view !== "mask") ctx.drawImage(state.original, 0, 0, canvas.width, canvas.height);
  if (view !== "original") {
    ctx.globalAlpha = view === "mask" ? 1 : opacity;
    ctx.drawImage(state.mask, 0, 0);
    ctx.globalAlpha = 1;
  }
  canvas.dataset.state = view;
}

function pick(file) {
  if (file) segment(file).catch((err) => setStatus(`error: ${err.message}`, true));
}

function wire() {
  $("file").addEventListener("change", (event) => pick(event.target.files[0]));
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    pick(event.dataTransfer.files[0]);
  });
  document.querySelectorAll('input[name="view"]').forEach((radio) => radio.addEventListener("change", render));
  $("opacity").addEventListener("input", () => {
    $("opacity-value").textContent = `${$("opacity").value} %`;
    render();
  });
  $("save-key").addEventListener("click", () => {
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value);
    state.model = null;
    loadModel();
  });
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
}

wire();
loadModel();
