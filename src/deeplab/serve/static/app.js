"use strict";
// The demo page: upload, show the label maps over the image, re-run the CRF from sliders.
const $ = (id) => document.getElementById(id);
let imageId = null, pending = null, inflight = false, queued = false, uploads = 0;
const values = {};

// What the user reads for each refusal; the server's detail follows.
const REFUSALS = {
  400: "The upload could not be read",
  404: "The server no longer has this image (it keeps only the latest ones): upload it again",
  408: "The upload took too long",
  413: "The image is too large",
  415: "Upload refused",
  422: "These CRF parameters cannot be used",
  503: "The server cannot take this now",
  504: "The server took too long",
};

class Refusal extends Error {}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function showError(error) {
  // Only our own messages are shown: never a browser's or a program's internals.
  const text = error instanceof Refusal ? error.message
    : "The server could not be reached: is deeplab serve still running?";
  setStatus(`Error: ${text}`, true);
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("network");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const lead = REFUSALS[response.status] || `The server failed (HTTP ${response.status})`;
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    throw new Refusal(detail && response.status !== 404 ? `${lead}: ${detail}` : lead);
  }
  return body;
}

function clearResults() {
  imageId = null;
  $("results").hidden = true;
  $("empty").hidden = false;
  for (const id of ["img-input", "base-dcnn", "img-dcnn", "base-crf", "img-crf"]) {
    $(id).removeAttribute("src");
  }
  markPresent([]);
  $("status").dataset.crfRuns = "0";
}

function showLegend(info) {
  const legend = $("legend");
  legend.textContent = "";
  info.classes.forEach((name, i) => {
    const item = document.createElement("span");
    item.className = "item";
    item.dataset.name = name;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const [r, g, b] = info.palette[i];
    swatch.style.background = `rgb(${r},${g},${b})`;
    item.append(swatch, document.createTextNode(name));
    legend.append(item);
  });
}

function markPresent(names) {
  for (const item of $("legend").querySelectorAll(".item")) {
    item.classList.toggle("present", names.includes(item.dataset.name));
  }
}

function addSlider(name, range, value) {
  const [min, max, step] = range;
  const row = document.createElement("label");
  row.className = "slider";
  const input = document.createElement("input");
  Object.assign(input, {type: "range", min, max, step, value, id: `slider-${name}`});
  const shown = document.createElement("output");
  shown.id = `value-${name}`;
  shown.textContent = value;
  values[name] = Number(value);
  input.addEventListener("input", () => {
    values[name] = Number(input.value);
    shown.textContent = input.value;
    clearTimeout(pending);
    pending = setTimeout(rerunCrf, 150);
  });
  row.append(document.createTextNode(name), input, shown);
  $("sliders").append(row);
}

function setOpacity(value) {
  for (const id of ["img-dcnn", "img-crf"]) $(id).style.opacity = String(value);
  $("opacity-value").textContent = Number(value).toFixed(2);
}

function showCrf(result) {
  $("img-crf").src = result.crf;
  $("status").dataset.crfRuns = String(result.crf_runs);
  markPresent(result.crf_classes);
  const [w, h] = result.crf_size;
  const scaled = w !== Number($("img-crf").dataset.width) ? ` at ${w}x${h} pixels` : "";
  setStatus(`CRF: ${result.crf_seconds.toFixed(2)} s (${result.params.iterations} iterations`
    + `${scaled}); labels ${result.crf_classes.join(", ")}; CRF runs so far: ${result.crf_runs}`);
}

async function rerunCrf() {
  if (!imageId) return;
  if (inflight) { queued = true; return; }
  inflight = true;
  setStatus("running the CRF...");
  const id = imageId;
  try {
    const result = await api(`/api/images/${id}/crf`, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(values)});
    if (id === imageId) showCrf(result);  // not for an image replaced meanwhile
  } catch (e) {
    if (id === imageId) showError(e);
  } finally {
    inflight = false;
    if (queued) { queued = false; rerunCrf(); }
  }
}

async function upload(file) {
  const info = window.deeplabInfo;
  const mine = ++uploads;  // a later upload wins over this one
  clearResults();
  if (file.size > info.max_upload_bytes) {
    showError(new Refusal(`${REFUSALS[413]}: ${file.name} is `
      + `${(file.size / 2 ** 20).toFixed(1)} MiB; this server takes at most `
      + `${(info.max_upload_bytes / 2 ** 20).toFixed(1)} MiB`));
    return;
  }
  setStatus(`uploading ${file.name} and running the network...`);
  const form = new FormData();
  form.append("file", file);
  try {
    const result = await api("/api/images", {method: "POST", body: form});
    if (mine !== uploads) return;
    imageId = result.id;
    for (const id of ["img-input", "base-dcnn", "base-crf"]) $(id).src = result.image;
    $("img-dcnn").src = result.dcnn;
    $("img-crf").dataset.width = String(result.width);
    $("empty").hidden = true;
    $("results").hidden = false;
    showCrf(result);
    // Sliders moved before this upload: show their CRF rather than the defaults'.
    if (Object.keys(values).some((k) => values[k] !== result.params[k])) rerunCrf();
  } catch (e) {
    if (mine !== uploads) return;
    clearResults();
    showError(e);
  }
}

async function start() {
  const info = await api("/api/info");
  window.deeplabInfo = info;
  $("network").textContent = `Network: ${info.network}`;
  $("limits").textContent = ` (${info.formats.join(", ")}; at most `
    + `${(info.max_upload_bytes / 2 ** 20).toFixed(0)} MiB and `
    + `${(info.max_pixels / 1e6).toFixed(1)} megapixels)`;
  if (info.weights_kind !== "real") {
    $("warning").hidden = false;
    $("warning").textContent = info.weights_hint;
  }
  showLegend(info);
  for (const [name, range] of Object.entries(info.sliders)) {
    addSlider(name, range, info.defaults[name]);
  }
  $("opacity").addEventListener("input", (event) => setOpacity(event.target.value));
  setOpacity($("opacity").value);
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) upload(event.target.files[0]);
  });
  setStatus("Choose an image.");
}

start().catch(showError);
