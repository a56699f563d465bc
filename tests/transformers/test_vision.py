"""Images in chat on the transformers engine: a tiny random-weight LLaVA through a real `xinf serve`."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

pytest.importorskip("PIL")

import tinymodels_vision
from PIL import Image

from xinf.testing.images import QUESTION, ask, picture, stream_ask
from xinf.testing.server import ServerProcess


@pytest.fixture(scope="module")
def llava_path() -> Path:
    return tinymodels_vision.ensure()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llava_path: Path, qwen3_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("xinf-vision")) as server:
        server.launch(model_path=str(llava_path), model_uid="llava", model_engine="transformers", threads=1)
        server.launch(model_path=str(qwen3_path), model_uid="text", model_engine="transformers", threads=1)
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return server.openai()


def chat(client: openai.OpenAI, messages: list[dict[str, Any]], **extra: Any) -> Any:
    return client.chat.completions.create(
        model="llava", messages=messages, max_tokens=6, temperature=0, extra_body={"ignore_eos": True}, **extra
    )


def test_the_launched_model_has_the_vision_ability(server: ServerProcess) -> None:
    described = server.http.get("/v1/models/llava").json()
    assert "vision" in described["model_ability"]


def test_image_and_text_answer_and_the_image_counts_in_the_prompt(client: openai.OpenAI) -> None:
    plain = chat(client, [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    one = chat(client, ask(picture((200, 30, 30))))
    two = chat(client, ask(picture((200, 30, 30)), picture((10, 10, 240), (30, 90), "JPEG")))
    for reply in (one, two):
        assert reply.choices[0].message.role == "assistant"
        assert isinstance(reply.choices[0].message.content, str)
        assert reply.usage.completion_tokens == 6 and reply.choices[0].finish_reason == "length"
    per_image = tinymodels_vision.TOKENS_PER_IMAGE
    # each image: its tokens and the template's line break after the placeholder
    assert per_image <= one.usage.prompt_tokens - plain.usage.prompt_tokens <= per_image + 2
    assert two.usage.prompt_tokens - one.usage.prompt_tokens == one.usage.prompt_tokens - plain.usage.prompt_tokens


def test_the_answer_is_the_models_own_for_those_pixels(client: openai.OpenAI, llava_path: Path) -> None:
    """Greedy output equals transformers' own generate() on the same image: the pixels reached the model."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    image = picture((30, 200, 90))
    served = chat(client, ask(image)).choices[0].message.content
    processor = AutoProcessor.from_pretrained(llava_path)
    model = AutoModelForImageTextToText.from_pretrained(llava_path, dtype=torch.bfloat16).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.open(io.BytesIO(image)).convert("RGB")], return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the replica runs
    try:
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    finally:
        torch.set_num_threads(threads)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert served == expected


def test_streaming_with_an_image(client: openai.OpenAI) -> None:
    finish, usage, pieces = stream_ask(client, "llava", picture((90, 90, 90)), max_tokens=8)
    assert finish == "length" and usage.completion_tokens == 8 and pieces >= 1
    assert usage.prompt_tokens > tinymodels_vision.TOKENS_PER_IMAGE


def test_an_image_that_does_not_decode_is_a_400(client: openai.OpenAI) -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # a PNG signature and nothing valid after it
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, ask(broken))
    assert "could not be decoded" in info.value.body["message"]


def test_an_image_to_a_text_model_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="text", messages=ask(picture((1, 2, 3))), max_tokens=4)
    assert "text" in info.value.body["message"] and "vision" in info.value.body["message"]


def test_the_readme_examples_run_as_written(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curl and openai examples of README "Images in chat", against the tiny LLaVA (the launch line needs a hub)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Images in chat", 1)[1].split("\n## ", 1)[0]
    (bash,) = [b for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S) if "curl" in b]
    (python,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)

    def here(code: str) -> str:
        return code.replace("http://127.0.0.1:9997", server.url).replace("qwen2.5-vl-instruct", "llava")

    (tmp_path / "cat.png").write_bytes(picture((250, 160, 20)))
    script = "\n".join(line for line in bash.splitlines() if not line.startswith("xinf "))
    result = subprocess.run(["bash", "-c", here(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["prompt_tokens"] > tinymodels_vision.TOKENS_PER_IMAGE

    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(out):
        exec(compile(here(python), "README.md", "exec"), namespace)
    namespace["client"].close()
    tokens = re.search(r"^(\d+) prompt tokens, the image's included$", out.getvalue(), flags=re.M)
    assert tokens is not None and int(tokens.group(1)) > tinymodels_vision.TOKENS_PER_IMAGE, out.getvalue()
