"""xinf.gguf's own tables of ggml types and file types, against the gguf package they stand in for.

The tables spare the server and every llama.cpp replica the gguf package's
import (numpy) at launch; they must say what gguf says, and a number they do
not know must still be answered by gguf.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from llamacpp_models import smollm2_spec

gguf = pytest.importorskip("gguf")

from xinf import gguf as ours  # noqa: E402
from xinf_llamacpp.options import ggml_type_of  # noqa: E402


def test_ggml_types_agree_with_the_gguf_package() -> None:
    for number, (name, block, size) in ours.GGML_TYPES.items():
        kind = gguf.GGMLQuantizationType(number)
        assert (kind.name, *gguf.GGML_QUANT_SIZES[kind]) == (name, block, size)


def test_file_types_agree_with_the_gguf_package() -> None:
    for number, name in ours.FILE_TYPES.items():
        assert gguf.LlamaFileType(number).name == name


def test_a_type_the_tables_lack_is_answered_by_gguf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(ours.GGML_TYPES, 8)
    assert ours.type_info(8) == ("Q8_0", 32, 34)
    assert ours.type_number("q8_0") == 8
    assert ours.tensor_nbytes((64, 2), 8) == 2 * 2 * 34
    with pytest.raises(ours.GGUFError, match="unknown ggml type 999"):
        ours.type_info(999)
    assert ours.type_number("q9") is None


def test_cache_types_by_name_or_number() -> None:
    assert ggml_type_of("q8_0", "cache_type_k") == 8
    assert ggml_type_of("GGML_TYPE_BF16", "cache_type_k") == 30
    assert ggml_type_of(2, "cache_type_v") == 2


def test_describing_a_gguf_file_imports_no_numpy() -> None:
    """What a launch by path and the llama.cpp estimate read: size, quantization, memory; numpy stays out."""
    path = smollm2_spec().source.path
    code = (
        "import sys\n"
        "from xinf.localmodel import spec_from_path\n"
        "from xinf_llamacpp.plugin import estimate_vram\n"
        f"spec = spec_from_path({path!r}, None, None, None, None)\n"
        "est = estimate_vram(spec=spec, options={'cache_type_k': 'q8_0'}, devices=[])\n"
        "print(spec.quantization, est.kv_cache > 0, 'numpy' in sys.modules, 'gguf' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["Q4_1", "True", "False", "False"]
