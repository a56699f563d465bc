"""Launch options -> SGLang's ServerArgs and requests -> SGLang's sampling params, checked with SGLang's own classes."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from xinf.errors import InvalidRequest, LaunchError
from xinf.testing.contract import HEAVY
from xinf.types import GenerateRequest, ModelSource, ModelSpec, Placement
from xinf_sglang.args import sampling_params, server_kwargs

SPEC = ModelSpec(name="m", format="pytorch", source=ModelSource(path="/models/qwen2.5-7b-instruct"))
FIELDS = {
    "model_path",
    "tp_size",
    "log_level",
    "incremental_streaming_output",
    "mem_fraction_static",
    "context_length",
    "max_running_requests",
    "random_seed",
    "chunked_prefill_size",
}


def server_args_class() -> type:
    # the submodule, not "sglang": this directory itself looks like a namespace package "sglang" under pytest
    pytest.importorskip("sglang.srt.server_args")
    from sglang.srt.server_args import ServerArgs

    return ServerArgs  # type: ignore[no-any-return]


def test_plugin_import_is_light() -> None:
    ep = next(e for e in importlib.metadata.entry_points(group="xinf.engines") if e.name == "sglang")
    code = f"import sys, json, {ep.value.split(':')[0]}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------------------------------ ServerArgs


def test_defaults_and_aliases() -> None:
    kwargs = server_kwargs(
        SPEC,
        {"gpu_memory_utilization": 0.7, "max_model_len": 4096, "max_num_seqs": 32, "seed": 3},
        Placement(devices=[0, 1]),
        FIELDS,
    )
    assert kwargs == {
        "model_path": "/models/qwen2.5-7b-instruct",
        "tp_size": 2,  # one rank per placed GPU
        "log_level": "error",
        "incremental_streaming_output": True,
        "mem_fraction_static": 0.7,
        "context_length": 4096,
        "max_running_requests": 32,
        "random_seed": 3,
    }
    assert server_kwargs(SPEC, {"tp_size": 1}, Placement(devices=[0, 1]), FIELDS)["tp_size"] == 1
    assert server_kwargs(SPEC, {}, Placement(), FIELDS)["tp_size"] == 1


def test_unknown_options_name_the_closest_fields() -> None:
    with pytest.raises(LaunchError, match="unknown SGLang option 'mem_fraction' \\(did you mean mem_fraction_static"):
        server_kwargs(SPEC, {"mem_fraction": 0.8}, Placement(), FIELDS)
    with pytest.raises(LaunchError, match="set by the launch"):
        server_kwargs(SPEC, {"model_path": "/elsewhere"}, Placement(), FIELDS)
    with pytest.raises(LaunchError, match="on local disk"):
        server_kwargs(ModelSpec(name="m", format="pytorch"), {}, Placement(), FIELDS)


def test_translation_builds_real_server_args() -> None:
    ServerArgs = server_args_class()
    kwargs = server_kwargs(
        SPEC,
        {
            "mem_fraction_static": 0.8,
            "context_length": 8192,
            "max_num_seqs": 64,
            "chunked_prefill_size": 4096,
            "kv_cache_dtype": "fp8_e5m2",
            "disable_radix_cache": True,
        },
        Placement(devices=[0, 1, 2, 3]),
        ServerArgs.__struct_fields__,
    )
    args = ServerArgs(**kwargs)
    assert (args.model_path, args.tp_size, args.mem_fraction_static) == ("/models/qwen2.5-7b-instruct", 4, 0.8)
    assert (args.context_length, args.max_running_requests, args.chunked_prefill_size) == (8192, 64, 4096)
    assert (args.kv_cache_dtype, args.disable_radix_cache) == ("fp8_e5m2", True)
    assert args.incremental_streaming_output is True and args.log_level == "error"


def test_every_server_args_field_is_an_option_and_typos_are_caught() -> None:
    ServerArgs = server_args_class()
    fields = ServerArgs.__struct_fields__
    assert len(fields) > 100  # the whole of ServerArgs, not a hand-picked list
    kwargs = server_kwargs(SPEC, {"schedule_policy": "lpm", "stream_interval": 4}, Placement(), fields)
    assert ServerArgs(**kwargs).schedule_policy == "lpm"
    with pytest.raises(LaunchError, match="did you mean chunked_prefill_size"):
        server_kwargs(SPEC, {"chunked_prefil_size": 1024}, Placement(), fields)


# ------------------------------------------------------------------------------------------ sampling params


def test_request_fields_map_to_sampling_params() -> None:
    request = GenerateRequest(
        prompt="x",
        max_tokens=9,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        stop=["\n\n", "END"],
        seed=7,
        ignore_eos=True,
    )
    assert sampling_params(request, 9) == {
        "max_new_tokens": 9,
        "ignore_eos": True,
        "skip_special_tokens": True,
        "stop": ["\n\n", "END"],
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "sampling_seed": 7,
    }
    # unset fields are left to SGLang and the model's generation_config
    assert sampling_params(GenerateRequest(prompt="x"), 100) == {
        "max_new_tokens": 100,
        "ignore_eos": False,
        "skip_special_tokens": True,
    }


def test_structured_output() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    params = sampling_params(
        GenerateRequest(prompt="x", response_format={"type": "json_schema", "json_schema": {"schema": schema}}), 5
    )
    assert json.loads(params["json_schema"]) == schema
    assert json.loads(
        sampling_params(GenerateRequest(prompt="x", response_format={"type": "json_object"}), 5)["json_schema"]
    ) == {"type": "object"}
    with pytest.raises(InvalidRequest, match="unsupported response_format type 'yaml'"):
        sampling_params(GenerateRequest(prompt="x", response_format={"type": "yaml"}), 5)


def test_sglang_accepts_what_we_send() -> None:
    pytest.importorskip("sglang.srt.sampling.sampling_params")
    from sglang.srt.sampling.sampling_params import TOP_K_ALL, SamplingParams

    request = GenerateRequest(prompt="x", max_tokens=9, temperature=0.7, top_p=0.95, top_k=0, stop=["END"], seed=1)
    params = SamplingParams(**sampling_params(request, 9))
    params.verify(32000)
    assert params.top_k == TOP_K_ALL  # top_k=0 means "no limit": the whole vocabulary
    assert (params.max_new_tokens, params.temperature, params.top_p, params.sampling_seed) == (9, 0.7, 0.95, 1)
    assert params.stop_strs == ["END"]
    greedy = SamplingParams(**sampling_params(GenerateRequest(prompt="x", temperature=0.0), 9))
    greedy.verify(32000)
    assert greedy.top_k == 1  # temperature 0 is SGLang's greedy decoding


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", -1.0, "temperature must be a non-negative"),
        ("top_p", 0.0, "top_p must be in (0, 1]"),
        ("presence_penalty", 3.0, "presence_penalty must be in [-2, 2]"),
    ],
)
def test_out_of_range_values_are_refused_by_sglang(field: str, value: float, message: str) -> None:
    # the engine turns these ValueErrors into 400s
    pytest.importorskip("sglang.srt.sampling.sampling_params")
    from sglang.srt.sampling.sampling_params import SamplingParams

    params = SamplingParams(**sampling_params(GenerateRequest(prompt="x", **{field: value}), 5))
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace("[", "\\[")):
        params.verify(32000)
