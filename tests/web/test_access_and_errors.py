"""The web page with an API key, the server's errors in its own words, and a download's progress."""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
import pytest

from xinf.testing.fakehub import FakeHub
from xinf.testing.server import ServerProcess

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
).expect

KEY = "sk-xinf-web-5e4d3c2b1a"


def region(page: Any, name: str) -> Any:
    return page.get_by_role("region", name=name, exact=True)


def test_page_asks_for_the_api_key_then_works(start_server, page: Any, shot) -> None:
    server: ServerProcess = start_server(args=["--api-key", KEY])
    # The page and its files load without a key; the API does not.
    home = httpx.get(f"{server.url}/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    script = httpx.get(f"{server.url}/web/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    refused = httpx.get(f"{server.url}/v1/models")
    assert refused.status_code == 401
    message = refused.json()["error"]["message"]

    page.goto(server.url)
    dialog = page.get_by_role("dialog", name="API key")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("alert")).to_have_text(message)
    expect(page.get_by_role("status").first).to_have_text("This server requires an API key.")
    shot("asked")

    # A wrong key: asked again, with the server's words.
    dialog.get_by_label("API key").fill("sk-wrong")
    dialog.get_by_role("button", name="Use key").click()
    expect(dialog.get_by_label("API key")).to_have_value("")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("alert")).to_have_text(message)

    dialog.get_by_label("API key").fill(KEY)
    dialog.get_by_role("button", name="Use key").click()
    expect(dialog).to_be_hidden()
    expect(region(page, "Engines").get_by_role("row").filter(has_text=re.compile(r"^test\b"))).to_contain_text("loaded")
    assert page.evaluate("sessionStorage.getItem('xinf.apiKey')") == KEY

    # Launch and chat (a stream) with the key.
    form = region(page, "Launch a model")
    form.get_by_label("Model name").fill("xinf-test-chat")
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.get_by_role("status")).to_have_text("Launched xinf-test-chat.")
    chat = region(page, "Chat")
    chat.get_by_label("Max tokens").fill("3")
    chat.get_by_label("Message").fill("hi")
    chat.get_by_role("button", name="Send").click()
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "xinf-test-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    ).json()
    expect(chat.get_by_role("group", name="Answer")).to_have_text(reply["choices"][0]["message"]["content"])
    shot("working")

    # The try-it panel sends the same key.
    auth = {"Authorization": f"Bearer {KEY}"}
    launched = httpx.post(
        f"{server.url}/v1/models", headers=auth, json={"model_name": "xinf-test-embed", "model_type": "embedding"}
    )
    assert launched.status_code == 200, launched.text
    tried = region(page, "Try a model")
    tried.get_by_label("Model to try").select_option("xinf-test-embed")
    tried.get_by_label("Text to embed").fill("hello")
    tried.get_by_role("button", name="Embed").click()
    vector = httpx.post(
        f"{server.url}/v1/embeddings", headers=auth, json={"model": "xinf-test-embed", "input": "hello"}
    ).json()["data"][0]["embedding"]
    first = ", ".join(f"{v:.4f}" for v in vector[:5])
    expect(tried.get_by_role("status", name="Embedding")).to_have_text(f"{len(vector)} dimensions: {first}, …")

    # The key is kept for this tab: a reload does not ask again.
    page.reload()
    expect(region(page, "Running models").get_by_role("row").filter(has_text="xinf-test-chat")).to_contain_text("ready")
    expect(dialog).to_be_hidden()

    # Another tab has no key: dismissing the dialog leaves the server's refusal on the page, and no new prompt.
    other = page.context.new_page()
    other.goto(server.url)
    other_dialog = other.get_by_role("dialog", name="API key")
    expect(other_dialog).to_be_visible()
    other.keyboard.press("Escape")
    expect(other_dialog).to_be_hidden()
    expect(region(other, "Running models").get_by_role("alert")).to_have_text(message)
    expect(region(other, "Engines").get_by_role("alert")).to_have_text(message)
    other.wait_for_timeout(3500)  # past one refresh: the dialog stays closed
    expect(other_dialog).to_be_hidden()
    # The header's button asks again.
    other.get_by_role("button", name="API key…").click()
    other_dialog.get_by_label("API key").fill(KEY)
    other_dialog.get_by_role("button", name="Use key").click()
    expect(region(other, "Running models").get_by_role("row").filter(has_text="xinf-test-chat")).to_contain_text(
        "ready"
    )
    expect(region(other, "Running models").get_by_role("alert")).to_be_hidden()
    other.close()


def test_server_errors_are_shown_as_the_server_words_them(start_server, page: Any, shot) -> None:
    server: ServerProcess = start_server()
    page.goto(server.url)
    form = region(page, "Launch a model")
    alert = form.get_by_role("alert")

    # An unknown model: the engines' lookup and the launch both say what the server said.
    body = {"model_name": "no-such-model", "model_type": "LLM", "replica": 1, "n_gpu": "auto"}
    lookup = server.http.get("/v1/engines", params={"model": "no-such-model"}).json()["error"]["message"]
    refused = server.http.post("/v1/models", json=body)
    assert refused.status_code == 404
    form.get_by_label("Model name").fill("no-such-model")
    expect(form.get_by_text(lookup, exact=True)).to_be_visible()
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(alert).to_have_text(refused.json()["error"]["message"])
    shot("unknown-model")

    # A load failure inside the replica.
    form.get_by_label("Model name").fill("xinf-test-chat")
    form.get_by_label("Engine options").fill('--fail_load "out of cheese"')
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(alert).to_have_text("replica 0 of xinf-test-chat: out of cheese")
    expect(form.get_by_role("status")).to_have_text("")

    # A chat request the server refuses: its message, and the question is back in the box to edit.
    form.get_by_label("Engine options").fill("--context_length 4")
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.get_by_role("status")).to_have_text("Launched xinf-test-chat.")
    expect(alert).to_be_hidden()
    question = "one two three four five six"
    chat_body = {"model": "xinf-test-chat", "messages": [{"role": "user", "content": question}], "stream": True}
    too_long = server.http.post("/v1/chat/completions", json=chat_body)
    assert too_long.status_code == 400
    chat = region(page, "Chat")
    expect(chat.get_by_label("Chat model")).to_have_value("xinf-test-chat")
    chat.get_by_label("Message").fill(question)
    chat.get_by_role("button", name="Send").click()
    expect(chat.get_by_role("alert")).to_have_text(too_long.json()["error"]["message"])
    expect(chat.get_by_label("Message")).to_have_value(question)
    expect(chat.get_by_role("listitem")).to_have_count(0)
    shot("chat-error")


def test_download_progress_and_cancel(start_server, page: Any, shot) -> None:
    with FakeHub() as hub:
        hub.add("org/tiny-gguf", {"tiny-F16.gguf": os.urandom(8 << 20)})
        hub.fail("tiny-F16.gguf", "slow:0.05")  # 64 KiB every 50 ms: about 6 s
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1"}
        server: ServerProcess = start_server(env=env)
        spec = {
            "format": "test",
            "quantizations": ["F16"],
            "huggingface": "org/tiny-gguf",
            "file": "tiny-{quantization}.gguf",
        }
        family = {"name": "tiny", "specs": [spec], "abilities": ["chat", "generate"]}
        registered = server.http.post("/v1/model_registrations/LLM", json={"model": family})
        assert registered.status_code == 200, registered.text

        page.goto(server.url)
        row = region(page, "Models").get_by_role("row").filter(has_text=re.compile(r"^tiny registered"))
        expect(row).to_contain_text("registered")
        row.get_by_role("button", name="Launch tiny…").click()
        form = region(page, "Launch a model")
        form.get_by_role("button", name="Launch", exact=True).click()
        expect(form.get_by_text(re.compile(r"^Downloading tiny-F16\.gguf: .+ of 8\.0 MiB$"))).to_be_visible()
        fraction = form.get_by_role("progressbar", name="Launch progress").evaluate("p => p.value")
        assert 0 < fraction < 1
        running = region(page, "Running models").get_by_role("row").filter(has_text="tiny")
        expect(running).to_contain_text("launching")
        shot("downloading")

        form.get_by_role("button", name="Cancel launch").click()
        expect(form.get_by_role("alert")).to_have_text("the launch was cancelled while downloading")
        expect(form.get_by_role("progressbar", name="Launch progress")).to_be_hidden()
        expect(region(page, "Running models").get_by_text("No model is running.")).to_be_visible()
