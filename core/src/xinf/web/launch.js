// The launch form: which engine can serve the model (and why not), then POST /v1/models with progress.

import { getJSON, postJSON, request } from "./api.js";
import { families, fillTypes } from "./catalog.js";
import { bytes, h, setOptions, showError } from "./dom.js";

const form = document.getElementById("launch-form");
const matchesBox = document.getElementById("engine-matches");
const errorBox = document.getElementById("launch-error");
const statusBox = document.getElementById("launch-status");
const progressBox = document.getElementById("launch-progress");
const progressBar = progressBox.querySelector("progress");
const progressText = progressBox.querySelector(".progress-text");
const launchButton = document.getElementById("launch");
const cancelButton = document.getElementById("cancel-launch");
const names = document.getElementById("model-names");

let matches = []; // GET /v1/engines?model=NAME: per engine, the specs it can serve here or why not
let looked = ""; // the model name `matches` belongs to
let launched = () => {};

/** `onLaunched(uid, modelType)` is called when a launch is ready. */
export function init(onLaunched) {
  launched = onLaunched;
  fillNames();
}

fillTypes(form.model_type);

/** Fill the form for a model picked from the Models table. */
export function choose(name, type) {
  form.model_type.value = type;
  form.model_name.value = name;
  fillNames();
  lookUp();
  form.scrollIntoView({ block: "start" });
  form.model_name.focus();
}

/** The model names of the chosen type; fields that apply to one type only are shown for it only. */
function fillNames() {
  const type = form.model_type.value;
  const list = families[type] ?? [];
  names.replaceChildren(...list.map((f) => h("option", { value: f.model_name })));
  for (const el of form.querySelectorAll("[data-types]")) {
    el.hidden = !el.dataset.types.split(" ").includes(type);
    if (el.hidden) for (const control of el.querySelectorAll("select, input")) control.value = "";
  }
}

function typeOf(name) {
  for (const [type, list] of Object.entries(families)) {
    if (list.some((f) => f.model_name === name)) return type;
  }
  return null;
}

async function lookUp() {
  const name = form.model_name.value.trim();
  if (name === looked) return;
  looked = name;
  matches = [];
  if (!name) {
    matchesBox.replaceChildren();
    fillEngines();
    return;
  }
  const type = typeOf(name);
  if (type && type !== form.model_type.value) {
    form.model_type.value = type;
    fillNames();
  }
  try {
    const data = await getJSON(`/v1/engines?model=${encodeURIComponent(name)}`);
    if (looked !== name) return; // the name changed while we asked
    matches = data.matches;
    matchesBox.replaceChildren(
      h("p", { class: "hint" }, `Engines for ${name}:`),
      h(
        "ul",
        { "aria-label": `Engines for ${name}` },
        ...matches.map((m) =>
          h(
            "li",
            {},
            h("strong", {}, m.engine),
            m.available
              ? h("span", { class: "status-ready" }, ` can serve it (${m.specs.length} spec${m.specs.length === 1 ? "" : "s"})`)
              : h("span", { class: "error" }, ` cannot serve it: ${m.reasons.join("; ")}`),
          ),
        ),
      ),
    );
    if (!matches.length) matchesBox.replaceChildren(h("p", { class: "hint" }, "No installed engine answered for it."));
  } catch (error) {
    if (looked !== name) return;
    matchesBox.replaceChildren(h("p", { class: "hint" }, error.message));
  }
  fillEngines();
}

function fillEngines() {
  const options = [["", "best available"]];
  for (const m of matches) options.push([m.engine, m.available ? m.engine : `${m.engine} (cannot serve it)`, !m.available]);
  setOptions(form.model_engine, options);
  fillSpecs();
}

/** Format, size and quantization offer only what the chosen engine can serve, each narrowing the next. */
function fillSpecs() {
  const engine = form.model_engine.value;
  let specs = matches.filter((m) => m.available && (!engine || m.engine === engine)).flatMap((m) => m.specs);
  const pick = (select, key, label = (v) => v) => {
    const values = [...new Set(specs.map((s) => s[key]))].filter((v) => v !== null && v !== undefined);
    setOptions(select, [["", "any"], ...values.map((v) => [String(v), label(v)])]);
    if (select.value) specs = specs.filter((s) => String(s[key]) === select.value);
  };
  pick(form.model_format, "format");
  pick(form.model_size_in_billions, "size_in_billions", (v) => `${v}B`);
  pick(form.quantization, "quantization");
}

let timer = null;
form.model_name.addEventListener("input", () => {
  clearTimeout(timer);
  timer = setTimeout(lookUp, 300);
});
form.model_name.addEventListener("change", lookUp);
form.model_type.addEventListener("change", fillNames);
form.model_engine.addEventListener("change", fillSpecs);
form.model_format.addEventListener("change", fillSpecs);
form.model_size_in_billions.addEventListener("change", fillSpecs);

// ---------------------------------------------------------------- the request body

/** `--n_ctx 4096 --flag --name=value` (as `xinf launch` takes them) or a JSON object -> engine options. */
export function parseOptions(text) {
  text = text.trim();
  if (!text) return {};
  if (text.startsWith("{")) {
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new Error(`Engine options: not valid JSON: ${error.message}`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new Error("Engine options: give a JSON object");
    }
    return value;
  }
  const words = [...text.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]);
  const options = {};
  for (let i = 0; i < words.length; ) {
    let key = words[i];
    if (!key.startsWith("--") || key.length < 3) {
      throw new Error(`Engine options: unexpected ${JSON.stringify(key)}; options look like --name value`);
    }
    key = key.slice(2);
    let value = "true";
    if (key.includes("=")) {
      [key, value] = [key.slice(0, key.indexOf("=")), key.slice(key.indexOf("=") + 1)];
      i += 1;
    } else if (i + 1 < words.length && !words[i + 1].startsWith("--")) {
      value = words[i + 1];
      i += 2;
    } else {
      i += 1;
    }
    try {
      options[key] = JSON.parse(value);
    } catch {
      options[key] = value;
    }
  }
  return options;
}

function parseEnvs(text) {
  const envs = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const eq = line.indexOf("=");
    if (eq < 1) throw new Error(`Environment variables: ${JSON.stringify(line)} is not NAME=value`);
    envs[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return envs;
}

function launchBody() {
  const field = (name) => (form.elements[name].value ?? "").trim();
  const body = parseOptions(field("options"));
  body.model_name = field("model_name");
  if (!body.model_name) throw new Error("Give the name of a model to launch.");
  body.model_type = field("model_type");
  for (const name of ["model_engine", "model_format", "quantization", "model_uid", "model_path", "download_hub"]) {
    if (field(name)) body[name] = field(name);
  }
  if (field("model_size_in_billions")) body.model_size_in_billions = Number(field("model_size_in_billions"));
  const replica = Number(field("replica") || "1");
  if (!Number.isInteger(replica) || replica < 1) throw new Error("Replicas: a whole number, 1 or more.");
  body.replica = replica;
  const gpus = field("n_gpu").toLowerCase();
  if (gpus === "" || gpus === "auto") body.n_gpu = "auto";
  else if (/^\d+$/.test(gpus)) body.n_gpu = Number(gpus);
  else throw new Error("GPUs: auto, a number, or 0 for the CPU only.");
  if (field("gpu_idx")) {
    const indexes = field("gpu_idx").split(/[\s,]+/).filter(Boolean);
    if (!indexes.every((i) => /^\d+$/.test(i))) throw new Error("GPU indexes: numbers separated by commas, like 0,1.");
    body.gpu_idx = indexes.map(Number);
  }
  if (field("enable_thinking")) body.enable_thinking = field("enable_thinking") === "true";
  const envs = parseEnvs(form.elements.envs.value);
  if (Object.keys(envs).length) body.envs = envs;
  return body;
}

// ---------------------------------------------------------------- launching

let polling = false;

async function showProgress(uid) {
  if (polling) return;
  polling = true;
  try {
    const response = await request(`/v1/models/${encodeURIComponent(uid)}/progress`);
    if (!response.ok) return; // not registered yet, or already gone
    const p = await response.json();
    progressBar.value = p.progress;
    if (p.downloading && p.total_bytes) {
      progressText.textContent =
        `Downloading ${p.file ?? p.repository ?? ""}: ${bytes(p.downloaded_bytes)} of ${bytes(p.total_bytes)}` +
        (p.attempt > 1 ? ` (attempt ${p.attempt})` : "");
    } else {
      progressText.textContent = p.progress >= 1 ? "Ready." : "Loading the model…";
    }
  } catch {
    // progress is a nicety; the launch's own answer says how it went
  } finally {
    polling = false;
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(errorBox, null);
  statusBox.textContent = "";
  let body;
  try {
    body = launchBody();
  } catch (error) {
    showError(errorBox, error);
    return;
  }
  const uid = body.model_uid || body.model_name;
  launchButton.disabled = true;
  cancelButton.hidden = false;
  cancelButton.dataset.uid = uid;
  progressBar.removeAttribute("value"); // indeterminate until the server says more
  progressText.textContent = "Starting…";
  progressBox.hidden = false;
  statusBox.textContent = `Launching ${uid}…`;
  const poll = setInterval(() => showProgress(uid), 1000);
  try {
    const result = await postJSON("/v1/models", body);
    statusBox.textContent = `Launched ${result.model_uid}.`;
    launched(result.model_uid, body.model_type);
  } catch (error) {
    statusBox.textContent = "";
    showError(errorBox, error);
  } finally {
    clearInterval(poll);
    launchButton.disabled = false;
    cancelButton.hidden = true;
    progressBox.hidden = true;
  }
});

cancelButton.addEventListener("click", async () => {
  try {
    await postJSON(`/v1/models/${encodeURIComponent(cancelButton.dataset.uid)}/cancel`);
  } catch (error) {
    showError(errorBox, error);
  }
});
