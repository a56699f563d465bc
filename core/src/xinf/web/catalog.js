// The installed engines and the models the server knows (built in and registered).

import { getJSON } from "./api.js";
import { h, showError } from "./dom.js";

const enginesBody = document.querySelector("#engines tbody");
const enginesError = document.getElementById("engines-error");
const modelsBody = document.querySelector("#models tbody");
const modelsError = document.getElementById("models-error");
const modelsType = document.getElementById("models-type");
const modelsFilter = document.getElementById("models-filter");

/** The model types the server serves, as `model_type` names them; each has its own registrations. */
export const TYPES = ["LLM", "embedding", "rerank", "audio", "image"];
export const families = Object.fromEntries(TYPES.map((type) => [type, []]));
let onChoose = () => {};

/** Offer every model type in a select (the launch form's and the Models table's). */
export function fillTypes(select) {
  const chosen = select.value;
  select.replaceChildren(...TYPES.map((type) => h("option", {}, type)));
  if (TYPES.includes(chosen)) select.value = chosen;
}

export async function loadEngines() {
  try {
    const { engines } = await getJSON("/v1/engines");
    enginesBody.replaceChildren(
      ...engines.map((e) =>
        h(
          "tr",
          {},
          h("td", {}, h("strong", {}, e.name), e.version ? ` ${e.version}` : ""),
          h("td", {}, e.distribution || e.module),
          h("td", {}, e.ok ? h("span", { class: "status-ready" }, "loaded") : h("span", { class: "error" }, e.error)),
        ),
      ),
    );
    if (!engines.length) enginesBody.append(h("tr", {}, h("td", { colspan: 3 }, "No engine plugin is installed.")));
    showError(enginesError, null);
  } catch (error) {
    showError(enginesError, error);
  }
}

/** Fetch every model type's registrations; `choose(name, type)` is called by a row's Launch button. */
export async function loadModels(choose) {
  onChoose = choose;
  const answers = await Promise.allSettled(
    TYPES.map((type) => getJSON(`/v1/model_registrations/${encodeURIComponent(type)}?detailed=true`)),
  );
  const failed = [];
  answers.forEach((answer, i) => {
    if (answer.status === "fulfilled") families[TYPES[i]] = answer.value;
    else failed.push(`${TYPES[i]}: ${answer.reason.message}`);
  });
  showError(modelsError, failed.length ? new Error(`Could not list ${failed.join("; ")}`) : null);
  renderModels();
  return families;
}

function formats(family) {
  const sizes = new Map();
  for (const spec of family.specs ?? []) {
    if (!sizes.has(spec.format)) sizes.set(spec.format, new Set());
    if (spec.size_in_billions !== null && spec.size_in_billions !== undefined) {
      sizes.get(spec.format).add(`${spec.size_in_billions}B`);
    }
  }
  return [...sizes].map(([format, s]) => (s.size ? `${format} (${[...s].join(", ")})` : format)).join("; ");
}

function renderModels() {
  const type = modelsType.value;
  const needle = modelsFilter.value.trim().toLowerCase();
  const rows = (families[type] ?? [])
    .map((f) => ({ family: f, formats: formats(f) }))
    .filter(({ family, formats }) =>
      [family.model_name, formats, (family.abilities ?? []).join(" "), family.description ?? ""]
        .join(" ")
        .toLowerCase()
        .includes(needle),
    );
  modelsBody.replaceChildren(
    ...rows.map(({ family, formats }) =>
      h(
        "tr",
        {},
        h(
          "td",
          {},
          h("strong", {}, family.model_name),
          family.is_builtin ? "" : h("span", { class: "muted" }, " registered"),
          family.description ? h("div", { class: "muted" }, family.description) : "",
        ),
        h("td", {}, formats),
        h("td", {}, (family.abilities ?? []).join(", ")),
        h("td", {}, family.context_length ?? ""),
        h(
          "td",
          { class: "actions" },
          h(
            "button",
            {
              type: "button",
              "aria-label": `Launch ${family.model_name}…`,
              onclick: () => onChoose(family.model_name, type),
            },
            "Launch…",
          ),
        ),
      ),
    ),
  );
  if (!rows.length) modelsBody.append(h("tr", {}, h("td", { colspan: 5 }, "No model matches.")));
}

fillTypes(modelsType);
modelsType.addEventListener("change", renderModels);
modelsFilter.addEventListener("input", renderModels);
