"""A real `xinf serve` with the transformers engine, driven by the real openai client."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from xinf.testing.server import ServerProcess

MSGS = [{"role": "user", "content": "Tell me about the sea."}]


def stream_all(client: openai.OpenAI, max_tokens: int, **extra: Any) -> tuple[str, str | None, Any]:
    """Text, finish reason and usage of one streamed chat."""
    text, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model="tiny",
        messages=MSGS,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, **extra},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(text), finish, usage


def test_chat(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    reply = client.chat.completions.create(
        model="tiny", messages=MSGS, max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 5


def test_greedy_is_repeatable_and_completion_works(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    runs = [
        client.completions.create(model="tiny", prompt="The sea is", max_tokens=6, temperature=0).choices[0].text
        for _ in range(2)
    ]
    assert runs[0] and runs[0] == runs[1]


def test_streaming(chat_server: ServerProcess) -> None:
    text, finish, usage = stream_all(chat_server.openai(), 12, temperature=0.8, seed=3)
    assert text and finish == "length"
    assert usage.completion_tokens == 12


def test_stop_string(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    full = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=16, temperature=0)
    words = full.choices[0].message.content.split()
    if len(words) < 3:
        pytest.skip(f"output too short to pick a stop word: {words}")
    cut = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=16, temperature=0, stop=[words[2]])
    assert words[2] not in cut.choices[0].message.content
    assert full.choices[0].message.content.startswith(cut.choices[0].message.content)
    assert cut.choices[0].finish_reason == "stop"


def test_thinking_switch_reaches_the_template(chat_server: ServerProcess, qwen3_path: Path) -> None:
    """With thinking off, the Qwen3 template writes an empty <think></think> block into the prompt."""
    from transformers import AutoTokenizer

    client = chat_server.openai()

    def prompt_tokens(**extra: Any) -> int:
        reply = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=1, extra_body=extra)
        return int(reply.usage.prompt_tokens)

    empty_block = len(AutoTokenizer.from_pretrained(qwen3_path)("<think>\n\n</think>\n\n")["input_ids"])
    on = prompt_tokens()
    assert prompt_tokens(chat_template_kwargs={"enable_thinking": True}) == on
    assert prompt_tokens(chat_template_kwargs={"enable_thinking": False}) == on + empty_block
    assert prompt_tokens(enable_thinking=False) == on + empty_block


def test_sixteen_concurrent_streams_all_complete(chat_server: ServerProcess) -> None:
    client = chat_server.openai(timeout=300)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: stream_all(client, 24, seed=i, temperature=0.7), range(16)))
    assert [finish for _, finish, _ in results] == ["length"] * 16
    assert [usage.completion_tokens for _, _, usage in results] == [24] * 16
    assert all(text for text, _, _ in results)


def test_context_overflow_is_a_400(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "sea " * 5000}])
    assert "context" in info.value.message


def test_batch_cannot_apply_min_p(chat_server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat_server.openai().chat.completions.create(
            model="tiny", messages=MSGS, max_tokens=2, extra_body={"min_p": 0.1}
        )
    assert "max_num_seqs 1" in info.value.message


def test_disconnect_frees_its_slot_and_the_batch_goes_on(start_server: Any, qwen3_path: Path) -> None:
    """Two slots: B runs long, A disconnects; C gets A's slot and finishes while B is still running."""
    server = start_server()
    server.launch(model_path=str(qwen3_path), model_uid="tiny", model_engine="transformers", threads=1, max_num_seqs=2)
    client = server.openai(timeout=300)
    events: list[str] = []
    b_result: dict[str, Any] = {}
    b_started = threading.Event()

    def run_b() -> None:
        stream = client.chat.completions.create(
            model="tiny",
            messages=MSGS,
            max_tokens=1500,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            b_started.set()
            if chunk.usage is not None:
                b_result["usage"] = chunk.usage
            for choice in chunk.choices:
                b_result["finish"] = choice.finish_reason or b_result.get("finish")
        events.append("B finished")

    b = threading.Thread(target=run_b)
    b.start()
    assert b_started.wait(120)
    a = client.chat.completions.create(
        model="tiny", messages=MSGS, max_tokens=3000, stream=True, extra_body={"ignore_eos": True}
    )
    for i, _ in enumerate(a):
        if i == 3:
            break
    a.close()  # the client goes away mid-stream
    c = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3, extra_body={"ignore_eos": True})
    events.append("C finished")
    assert c.choices[0].finish_reason == "length"
    b.join(300)
    assert events == ["C finished", "B finished"]
    assert b_result["finish"] == "length" and b_result["usage"].completion_tokens == 1500


def test_batching_off_by_env_reproduces_seeds(start_server: Any, qwen3_path: Path) -> None:
    """XINFERENCE_TRANSFORMERS_ENABLE_BATCHING=0: one at a time, so a seed fixes sampled output."""
    server = start_server(env={"XINFERENCE_TRANSFORMERS_ENABLE_BATCHING": "0"})
    server.launch(model_path=str(qwen3_path), model_uid="tiny", model_engine="transformers", threads=1)
    client = server.openai()

    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model="tiny", messages=MSGS, max_tokens=12, temperature=1.0, seed=seed, extra_body={"min_p": 0.01}
        )
        return str(reply.choices[0].message.content)

    assert sample(5) == sample(5)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_echo_scores_the_prompt_with_logprobs(chat_server: ServerProcess) -> None:
    """max_tokens 0 with echo and logprobs: the prompt's tokens, the first with a null logprob (evaluation tools)."""
    client = chat_server.openai()
    reply = client.completions.create(model="tiny", prompt="the sea is deep", max_tokens=0, echo=True, logprobs=2)
    choice = reply.choices[0]
    assert choice.text == "the sea is deep" and choice.finish_reason == "length"
    lp = choice.logprobs
    assert len(lp.tokens) == reply.usage.prompt_tokens and "".join(lp.tokens) == "the sea is deep"
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:])
    assert all(len(top) in (1, 2) for top in lp.top_logprobs[1:])  # two alternatives (one when the chosen is best)
    assert reply.usage.completion_tokens == 0
    ids = client.completions.create(model="tiny", prompt=[1, 2, 3], max_tokens=2, extra_body={"ignore_eos": True})
    assert ids.usage.prompt_tokens == 3 and ids.usage.completion_tokens == 2


def test_forced_tool_calls_and_json_responses_are_constrained(
    tmp_path_factory: pytest.TempPathFactory, qwen3_path: Path
) -> None:
    """llguidance masks the random model's logits: its output is a valid call, or JSON matching the schema."""
    pytest.importorskip("llguidance")
    import json

    with ServerProcess(tmp_path_factory.mktemp("constrained")) as server:
        server.launch(model_name="qwen3", model_path=str(qwen3_path), model_uid="tiny", model_engine="transformers")
        client = server.openai()
        weather = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 8}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
        reply = client.chat.completions.create(
            model="tiny", messages=MSGS, tools=[weather], tool_choice="required", max_tokens=60, temperature=0
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.tool_calls[0].function.name == "get_weather"
        assert set(json.loads(choice.message.tool_calls[0].function.arguments)) == {"city"}
        schema = {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["n"],
            "additionalProperties": False,
        }
        fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
        answer = client.chat.completions.create(
            model="tiny",
            messages=MSGS,
            response_format=fmt,
            max_tokens=30,
            temperature=0,
            extra_body={"enable_thinking": False},
        )
        assert 0 <= json.loads(answer.choices[0].message.content)["n"] <= 9
