// The try-it panel: one small form per ability of the models that do not chat (rerank, embed, speech to text,
// text to speech, text to image), each calling the same API route a client would.

import { events, postForBlob, postJSON } from "./api.js";
import { h, setOptions, showError } from "./dom.js";

const modelSelect = document.getElementById("try-model");
const errorBox = document.getElementById("try-error");
const none = document.getElementById("try-none");
const forms = [...document.querySelectorAll("form[data-ability]")];

let models = []; // the ready models that have one of the forms' abilities
let wanted = null; // a model to pick as soon as it is listed (just launched, or its Try button pressed)
let audioUrl = null; // the speech shown now, released when replaced
let shownFor = ""; // the model the forms are shown for

/** True when the model has an ability one of the forms tries. */
export function tryable(m) {
  return forms.some((f) => m.model_ability.includes(f.dataset.ability));
}

/** Offer the running models that are ready and have something to try. */
export function setModels(all) {
  models = all.filter((m) => m.status === "ready" && tryable(m));
  const options = models.map((m) => [m.id, `${m.id} (${m.model_type}${m.id === m.model_name ? "" : `, ${m.model_name}`})`]);
  setOptions(modelSelect, options.length ? options : [["", "no model to try is running", true]]);
  if (wanted && options.some(([uid]) => uid === wanted)) {
    modelSelect.value = wanted;
    wanted = null;
  }
  if (modelSelect.value !== shownFor) showForms();
}

/** Pick a model to try, now or once it is ready. */
export function select(uid) {
  wanted = uid;
  if ([...modelSelect.options].some((o) => o.value === uid && !o.disabled)) {
    modelSelect.value = uid;
    wanted = null;
    showForms();
  }
  modelSelect.focus();
}

function showForms() {
  const model = models.find((m) => m.id === modelSelect.value);
  shownFor = model?.id ?? "";
  for (const form of forms) form.hidden = !model?.model_ability.includes(form.dataset.ability);
  none.hidden = Boolean(model);
  showError(errorBox, null);
}

modelSelect.addEventListener("change", showForms);

/** Run a form's call with its button disabled; an error shows in the panel's alert. */
function handle(form, call) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    showError(errorBox, null);
    button.disabled = true;
    try {
      await call(modelSelect.value, form.elements);
    } catch (error) {
      showError(errorBox, error);
    } finally {
      button.disabled = false;
    }
  });
}

/** A score as the API gave it, rounded for reading. */
function score(x) {
  return Number(x).toFixed(4);
}

handle(document.getElementById("try-rerank"), async (model, f) => {
  const documents = f.documents.value.split("\n").map((d) => d.trim()).filter(Boolean);
  const list = f.documents.form.querySelector(".try-output");
  list.replaceChildren();
  const answer = await postJSON("/v1/rerank", { model, query: f.query.value, documents, return_documents: true });
  list.replaceChildren(
    ...answer.results.map((r) =>
      h("li", {}, h("span", { class: "score" }, score(r.relevance_score)), " ", r.document?.text ?? documents[r.index]),
    ),
  );
});

handle(document.getElementById("try-embed"), async (model, f) => {
  const out = f.input.form.querySelector(".try-output");
  out.textContent = "";
  const answer = await postJSON("/v1/embeddings", { model, input: f.input.value });
  const vector = answer.data[0].embedding;
  out.textContent = `${vector.length} dimensions: ${vector.slice(0, 5).map(score).join(", ")}, …`;
});

handle(document.getElementById("try-transcribe"), async (model, f) => {
  const out = f.file.form.querySelector(".try-output");
  out.textContent = "";
  const file = f.file.files[0];
  if (!file) throw new Error("Choose an audio file first.");
  const body = new FormData();
  body.append("file", file, file.name);
  body.append("model", model);
  body.append("stream", "true"); // the text shows as it is heard
  if (f.language.value.trim() && f.task.value === "transcriptions") body.append("language", f.language.value.trim());
  let text = "";
  for await (const event of events(`/v1/audio/${f.task.value}`, body)) {
    if (event.type === "transcript.text.delta") text += event.delta;
    if (event.type === "transcript.text.done") text = event.text;
    out.textContent = text.trim();
  }
  if (!text.trim()) out.textContent = "(no speech heard)";
});

handle(document.getElementById("try-speech"), async (model, f) => {
  const player = f.input.form.querySelector("audio");
  const body = { model, input: f.input.value, response_format: f.response_format.value };
  if (f.voice.value.trim()) body.voice = f.voice.value.trim();
  if (f.speed.value) body.speed = Number(f.speed.value);
  const audio = await postForBlob("/v1/audio/speech", body);
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = URL.createObjectURL(audio);
  player.src = audioUrl;
  player.hidden = false;
});

handle(document.getElementById("try-image"), async (model, f) => {
  const figure = f.prompt.form.querySelector("figure");
  const size = f.size.value.trim();
  const start = f.picture.files[0]; // with a picture: image to image
  let answer;
  if (start) {
    const body = new FormData();
    body.append("image", start, start.name);
    for (const [name, value] of [["model", model], ["prompt", f.prompt.value], ["size", size], ["seed", f.seed.value]]) {
      if (value) body.append(name, value);
    }
    body.append("response_format", "b64_json");
    answer = await postJSON("/v1/images/edits", body);
  } else {
    const body = { model, prompt: f.prompt.value, size, n: 1, response_format: "b64_json" };
    if (f.seed.value) body.seed = Number(f.seed.value);
    answer = await postJSON("/v1/images/generations", body);
  }
  const img = figure.querySelector("img");
  img.src = `data:image/png;base64,${answer.data[0].b64_json}`;
  img.alt = f.prompt.value;
  figure.querySelector("figcaption").textContent = start ? `${size || "the picture's size"}, from ${start.name}` : size;
  figure.hidden = false;
});
