// The emofuse web page: upload a file or paste a dialogue, watch the job, show its report.
// Plain JavaScript, no library and nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // the job being watched
let urls = []; // object URLs of the downloads, revoked when replaced

function headers(extra = {}) {
  const key = sessionStorage.getItem("emofuse-key") || $("key").value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (response.status === 401) $("key-label").hidden = false;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadModels() {
  try {
    const models = await (await api("/v1/models")).json();
    const select = $("model");
    select.replaceChildren(...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.task ? `${m.name} (${m.task})` : m.name;
      return option;
    }));
    showError("");
  } catch (e) {
    showError(`models: ${e.message}`);
  }
}

function parseDialogue(text) {
  const turns = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line) continue;
    const m = line.match(/^([^:]{1,40}):\s+(\S.*)$/);
    turns.push(m ? { speaker: m[1].trim(), text: m[2] } : { text: line });
  }
  return turns;
}

async function submit(body, isJson) {
  showError("");
  $("result").hidden = true;
  const options = { method: "POST", body };
  if (isJson) options.headers = { "Content-Type": "application/json" };
  try {
    const job = await (await api("/v1/jobs", options)).json();
    watch(job);
  } catch (e) {
    showError(e.message);
  }
}

function render(job) {
  $("status").hidden = false;
  $("progress").value = job.progress || 0;
  $("state").textContent = job.state;
  $("step").textContent = job.step || "";
  $("cancel").disabled = !(job.state === "queued" || job.state === "running");
}

async function watch(job) {
  current = job.id;
  render(job);
  while (current === job.id && (job.state === "queued" || job.state === "running")) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    try {
      job = await (await api(`/v1/jobs/${job.id}`)).json();
    } catch (e) {
      showError(e.message);
      return;
    }
    if (current === job.id) render(job);
  }
  if (current !== job.id) return;
  if (job.state === "done") {
    await showResult(job);
  } else if (job.state === "failed") {
    showError(job.error || "the job failed");
  }
}

async function download(link, path, name, type) {
  const response = await api(path);
  const url = URL.createObjectURL(new Blob([await response.text()], { type }));
  urls.push(url);
  link.href = url;
  link.download = name;
}

async function showResult(job) {
  urls.forEach((u) => URL.revokeObjectURL(u));
  urls = [];
  const stem = (job.filename || "result").replace(/\.[^.]*$/, "");
  try {
    const html = await (await api(job.links["report.html"])).text();
    const frame = $("report");
    const fit = () => {
      const doc = frame.contentDocument;
      if (!doc || !doc.documentElement) return;
      const height = Math.max(doc.documentElement.scrollHeight, doc.body ? doc.body.scrollHeight : 0);
      frame.style.height = `${height + 24}px`;
    };
    frame.onload = () => { fit(); setTimeout(fit, 300); };
    $("result").hidden = false; // laid out before the report loads, so it can be measured
    frame.srcdoc = html;
    await download($("download-json"), job.links["result.json"], `${stem}.json`, "application/json");
    await download($("download-csv"), job.links["result.csv"], `${stem}.csv`, "text/csv");
    const report = URL.createObjectURL(new Blob([html], { type: "text/html" }));
    urls.push(report);
    $("download-html").href = report;
    $("download-html").download = `${stem}.html`;
  } catch (e) {
    showError(e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").addEventListener("change", () => {
    sessionStorage.setItem("emofuse-key", $("key").value.trim());
    loadModels();
  });
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = $("file").files[0];
    if (!file) { showError("choose a file first"); return; }
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("model", $("model").value);
    form.append("language", $("language").value.trim() || "en");
    submit(form, false);
  });
  $("dialogue-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const turns = parseDialogue($("dialogue").value);
    if (!turns.length) { showError("paste at least one line"); return; }
    const body = { turns, language: $("language").value.trim() || "en" };
    if ($("model").value) body.model = $("model").value;
    submit(JSON.stringify(body), true);
  });
  $("cancel").addEventListener("click", async () => {
    if (!current) return;
    try {
      render(await (await api(`/v1/jobs/${current}`, { method: "DELETE" })).json());
    } catch (e) {
      showError(e.message);
    }
  });
  loadModels();
});
