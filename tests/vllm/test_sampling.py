"""What xinf_vllm.sampling refuses before vLLM sees a request (no engine needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from xinf.errors import InvalidRequest
from xinf.types import GenerateRequest, ModelSpec
from xinf_vllm import sampling

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "Weather?"}]


@dataclass
class Model:
    spec: ModelSpec
    max_model_len: int = 512
    defaults: dict[str, Any] = field(default_factory=dict)


def model(tool_parser: str | None) -> Model:
    return Model(ModelSpec(name="m", format="pytorch", tool_parser=tool_parser))


@pytest.mark.parametrize(("parser", "written"), [(None, "declares no format"), ("glm4", "writes them as 'glm4'")])
def test_tools_in_a_format_xinf_cannot_read_are_a_400(parser: str | None, written: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        sampling.check_tools(model(parser), GenerateRequest(messages=ASK, tools=[WEATHER], tool_choice="auto"))
    assert refused.value.param == "tools" and written in refused.value.message and "'m'" in refused.value.message
    # tool_choice none: nothing to read back
    sampling.check_tools(model(parser), GenerateRequest(messages=ASK, tools=[WEATHER], tool_choice="none"))


def test_the_constrained_field_is_named() -> None:
    forced = GenerateRequest(messages=ASK, tools=[WEATHER], tool_choice="required")
    assert sampling.constrained_param(model("qwen"), forced) == "tools"
    answer = GenerateRequest(messages=ASK, response_format={"type": "json_object"})
    assert sampling.constrained_param(model("qwen"), answer) == "response_format"
    assert sampling.constrained_param(model("qwen"), GenerateRequest(messages=ASK)) is None
    sampling.check_tools(model("qwen"), forced)  # a format xinf reads
