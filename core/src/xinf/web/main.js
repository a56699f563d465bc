// The page's start: ask the server whether it needs a key, then fill every panel.

import { getJSON, onKeyNeeded, setApiKey } from "./api.js";
import * as catalog from "./catalog.js";
import * as chat from "./chat.js";
import { showError } from "./dom.js";
import * as launch from "./launch.js";
import * as running from "./running.js";
import * as tryIt from "./try.js";

const dialog = document.getElementById("key-dialog");
const keyForm = document.getElementById("key-form");
const keyError = document.getElementById("key-error");
const keyButton = document.getElementById("key-button");
const serverStatus = document.getElementById("server-status");

let dismissed = false; // once the user closed the dialog, refreshes do not reopen it; the API key button does
let open = null; // the dialog's answer while it is shown: a second caller waits for the same one

/** Ask for a key in a modal dialog; resolves with the key, or null when dismissed. */
function askForKey(message) {
  if (dismissed) return Promise.resolve(null);
  open ??= new Promise((resolve) => {
    showError(keyError, message ? { message } : null);
    keyForm.key.value = "";
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      () => {
        const key = dialog.returnValue === "use" ? keyForm.key.value.trim() : "";
        if (key) setApiKey(key);
        dismissed = !key;
        resolve(key || null);
      },
      { once: true },
    );
    dialog.showModal();
  }).finally(() => {
    open = null;
  });
  return open;
}

onKeyNeeded(askForKey);

keyButton.addEventListener("click", async () => {
  dismissed = false;
  if (await askForKey(null)) loadAll();
});

function loadAll() {
  catalog.loadEngines();
  catalog.loadModels(launch.choose).then(() => launch.init(onLaunched));
  running.refresh();
}

function onLaunched(uid, modelType) {
  if (modelType === "LLM") chat.select(uid);
  else tryIt.select(uid);
  running.refresh();
}

running.init({
  onModels: (models) => {
    chat.setModels(models);
    tryIt.setModels(models);
  },
  onChat: chat.select,
  onTry: tryIt.select,
  canTry: tryIt.tryable,
});

try {
  const { auth } = await getJSON("/v1/cluster/auth");
  keyButton.hidden = !auth;
  serverStatus.textContent = auth ? "This server requires an API key." : "";
} catch (error) {
  serverStatus.textContent = `The server did not answer: ${error.message}`;
}
loadAll();
