// Running models with their replicas, the devices they sit on; refreshed every few seconds.

import { deleteJSON, getJSON, postJSON } from "./api.js";
import { bytes, h, showError } from "./dom.js";

const body = document.querySelector("#running tbody");
const empty = document.getElementById("running-empty");
const errorBox = document.getElementById("running-error");
const host = document.getElementById("host");
const devicesTable = document.getElementById("devices");
const devicesBody = devicesTable.querySelector("tbody");

const listeners = [];
let chat = () => {};
let tryModel = () => {};
let canTry = () => false;
let shown = ""; // what is on screen, so an unchanged refresh keeps focus and selection
let busy = false;

/**
 * `onModels(models)` after every refresh; `onChat(uid)` when a row's Chat button is pressed, `onTry(uid)` when its
 * Try button is (shown for the models `canTry(model)` accepts).
 */
export function init({ onModels, onChat, onTry, canTry: tryable }) {
  listeners.push(onModels);
  chat = onChat;
  tryModel = onTry ?? tryModel;
  canTry = tryable ?? canTry;
  setInterval(() => {
    if (!document.hidden) refresh();
  }, 3000);
}

export async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [models, devices] = await Promise.all([getJSON("/v1/models"), getJSON("/v1/cluster/devices")]);
    showError(errorBox, null);
    const state = JSON.stringify([models.data, devices]);
    if (state !== shown) {
      shown = state;
      renderModels(models.data.filter((m) => !m.parent)); // adapters (parent set) are listed with their model
      renderDevices(devices);
    }
    for (const listener of listeners) listener(models.data);
  } catch (error) {
    showError(errorBox, error);
  } finally {
    busy = false;
  }
}

function spec(m) {
  const size = m.model_size_in_billions === null ? null : `${m.model_size_in_billions}B`;
  return [m.model_format, size, m.quantization].filter((x) => x !== null && x !== undefined).join(" · ");
}

/** `[0, 1, 2, 5]` -> `"0-2,5"`, as `xinf list` and /proc write core sets. */
function coreRanges(cores) {
  const sorted = [...new Set(cores)].sort((a, b) => a - b);
  const parts = [];
  for (let i = 0; i < sorted.length; i++) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j;
  }
  return parts.join(",");
}

function replica(r) {
  const where = r.devices.length ? `GPU ${r.devices.join(", ")}` : "CPU";
  const parts = [`#${r.index}`, h("span", { class: `status-${r.status}` }, r.status), where];
  if (r.cores && r.cores.length) {
    const threads = r.threads ? ` (${r.threads} thread${r.threads === 1 ? "" : "s"})` : "";
    parts.push(`cores ${coreRanges(r.cores)}${threads}`);
  }
  if (r.host_memory) parts.push(`${bytes(r.host_memory)} RAM`);
  if (r.pid) parts.push(`pid ${r.pid}`);
  if (r.inflight) parts.push(`${r.inflight} in flight`);
  return h("li", {}, parts.flatMap((p, i) => (i ? [" · ", p] : [p])));
}

async function act(button, call) {
  button.disabled = true;
  try {
    await call();
    showError(errorBox, null);
  } catch (error) {
    showError(errorBox, error);
  }
  button.disabled = false;
  await refresh();
}

function actions(m) {
  const uid = encodeURIComponent(m.id);
  if (m.status === "launching") {
    return h(
      "button",
      {
        type: "button",
        "aria-label": `Cancel the launch of ${m.id}`,
        onclick: (e) => act(e.currentTarget, () => postJSON(`/v1/models/${uid}/cancel`)),
      },
      "Cancel",
    );
  }
  return [
    m.status === "ready" && m.model_ability.includes("chat")
      ? h("button", { type: "button", "aria-label": `Chat with ${m.id}`, onclick: () => chat(m.id) }, "Chat")
      : null,
    m.status === "ready" && !m.model_ability.includes("chat") && canTry(m)
      ? h("button", { type: "button", "aria-label": `Try ${m.id}`, onclick: () => tryModel(m.id) }, "Try")
      : null,
    h(
      "button",
      {
        type: "button",
        class: "danger",
        "aria-label": `Terminate ${m.id}`,
        onclick: (e) => act(e.currentTarget, () => deleteJSON(`/v1/models/${uid}`)),
      },
      "Terminate",
    ),
  ];
}

function renderModels(models) {
  body.replaceChildren(
    ...models.map((m) =>
      h(
        "tr",
        { "data-uid": m.id },
        h(
          "td",
          {},
          h("strong", {}, m.id),
          h("div", { class: "muted" }, m.model_name === m.id ? m.model_type : `${m.model_name} · ${m.model_type}`),
          m.adapters && m.adapters.length
            ? h("div", { class: "muted" }, `LoRA: ${m.adapters.map((a) => a.name).join(", ")}`)
            : null,
        ),
        h("td", {}, m.model_engine),
        h("td", {}, spec(m)),
        h(
          "td",
          {},
          h("span", { class: `status-${m.status}` }, m.status),
          m.error ? h("div", { class: "error" }, m.error) : null,
        ),
        h("td", {}, h("ul", { class: "replicas", "aria-label": `Replicas of ${m.id}` }, m.replicas.map(replica))),
        h("td", { class: "actions" }, actions(m)),
      ),
    ),
  );
  empty.hidden = models.length > 0;
  body.parentElement.hidden = !models.length;
}

function renderDevices(d) {
  host.textContent =
    `${d.system} · ${d.cpu_count} CPU cores · ${bytes(d.memory_available)} of ${bytes(d.memory_total)} memory free` +
    (d.memory_reserved ? ` · ${bytes(d.memory_reserved)} reserved by replicas` : "") +
    (d.devices.length ? "" : " · no accelerator: models run on the CPU");
  devicesTable.hidden = !d.devices.length;
  devicesBody.replaceChildren(
    ...d.devices.map((g) =>
      h(
        "tr",
        {},
        h("td", {}, `${g.index}: ${g.name}`),
        h("td", {}, bytes(g.total_memory)),
        h("td", {}, bytes(g.available)),
        h("td", {}, bytes(g.reserved)),
        h("td", {}, g.replicas.join(", ")),
      ),
    ),
  );
}
