"""Build xinf's built-in catalogue (core/src/xinf/families/*.json) from Xinference's own model-family data.

    python tools/catalog_from_xinference.py /path/to/xorbitsai-inference-checkout COMMIT

Model facts (hub ids, sizes, quantizations, file names, context lengths,
reasoning tags, tool-call formats) are data: they are read from Xinference's
``llm_family.json`` and ``model_spec.json`` files through ``xinf.catalog`` (the
same reader as ``xinf catalog import``) and each entry records where they were
checked.  Entries written by hand (``HAND``) are kept as they are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xinf import catalog

FAMILIES = Path(__file__).resolve().parents[1] / "core" / "src" / "xinf" / "families"
SOURCES = {
    "LLM": ("xinference/model/llm/llm_family.json", "llm.json"),
    "embedding": ("xinference/model/embedding/model_spec.json", "embedding.json"),
    "rerank": ("xinference/model/rerank/model_spec.json", "rerank.json"),
}
PICK = {
    "LLM": [
        "Qwen3-Instruct", "Qwen3-Thinking", "Qwen3-Coder", "Qwen3-Next-Instruct", "Qwen3-Next-Thinking",
        "Qwen3-VL-Instruct", "Qwen3-VL-Thinking", "qwen2.5", "qwen2.5-coder", "qwen2.5-coder-instruct",
        "qwen2.5-vl-instruct", "qwen2.5-instruct-1m", "qwen2-instruct", "qwen2-vl-instruct", "QwQ-32B",
        "deepseek-r1-distill-qwen", "deepseek-r1-distill-llama", "deepseek-r1-0528-qwen3", "deepseek-r1",
        "deepseek-v3", "Deepseek-V3.1", "llama-3.1", "llama-3-instruct", "llama-3.2-vision-instruct",
        "llama-3.3-instruct", "gemma-3-it", "gemma-3-1b-it", "mistral-instruct-v0.3", "mistral-nemo-instruct",
        "mistral-large-instruct", "mixtral-instruct-v0.1", "codestral-v0.1", "glm4-0414", "glm4-chat", "glm-4.5",
        "minicpm4", "minicpm3-4b", "MiniCPM-V-4.5", "internlm3-instruct", "gpt-oss", "phi-3-mini-128k-instruct",
        "phi-3-mini-4k-instruct", "seed-oss", "Ernie4.5", "Yi-1.5-chat", "tiny-llama", "marco-o1", "skywork-or1",
    ],
    "embedding": [
        "bge-m3", "bge-large-en-v1.5", "bge-base-en-v1.5", "bge-small-en-v1.5", "bge-large-zh-v1.5",
        "bge-base-zh-v1.5", "bge-small-zh-v1.5", "gte-large", "gte-base", "gte-Qwen2", "e5-large-v2",
        "multilingual-e5-large", "jina-embeddings-v2-small-en", "jina-embeddings-v2-base-en",
        "jina-embeddings-v2-base-zh", "jina-embeddings-v3", "Qwen3-Embedding-0.6B", "Qwen3-Embedding-4B",
        "Qwen3-Embedding-8B", "m3e-base", "bce-embedding-base_v1", "text2vec-base-chinese",
    ],
    "rerank": [
        "bge-reranker-large", "bge-reranker-base", "bge-reranker-v2-m3", "bge-reranker-v2-gemma",
        "jina-reranker-v2", "Qwen3-Reranker-0.6B", "Qwen3-Reranker-4B", "Qwen3-Reranker-8B",
        "bce-reranker-base_v1", "minicpm-reranker",
    ],
}  # fmt: skip
# Written by hand: models that ship offline, the test engine's, and families tests rely on as written.
HAND = {
    "smollm2-instruct", "qwen2.5-instruct", "qwen3", "llama-3.1-instruct", "phi-4", "mistral-small-instruct",
    "xinf-test-chat", "xinf-test-reasoning", "all-MiniLM-L6-v2", "xinf-test-embed",
}  # fmt: skip


# Errors found in that data by tests/core/test_catalog.py (a GGUF file template naming another model):
# repository -> the corrected template, or None to leave the spec out.
FIXES = {
    "unsloth/DeepSeek-R1-Distill-Llama-70B-GGUF": "DeepSeek-R1-Distill-Llama-70B-{quantization}.gguf",
    "unsloth/ERNIE-4.5-300B-A47B-PT-GGUF": None,  # its template names the 0.3B files; the real names are unchecked
}


def fix(family: dict) -> dict:
    specs = []
    for spec in family["specs"]:
        repo = spec.get("huggingface") or spec.get("modelscope")
        if spec.get("format") == "ggufv2" and repo in FIXES:
            if FIXES[repo] is None:
                continue
            spec["file"] = FIXES[repo]
            family["checked_note"] = f"GGUF file template of {repo} corrected (it named another model's files)"
        specs.append(spec)
    family["specs"] = specs
    return family


def main(root: Path, commit: str) -> None:
    for model_type, (source, target) in SOURCES.items():
        entries = {e["model_name"]: e for e in json.loads((root / source).read_bytes())}
        out_path = FAMILIES / target
        kept = [f for f in json.loads(out_path.read_bytes()) if f["name"] in HAND] if out_path.exists() else []
        generated = []
        for name in PICK[model_type]:
            try:
                family = catalog.convert(entries[name], model_type, keep_template=False)
            except catalog.Skip as exc:
                print(f"skipped {name}: {exc}", file=sys.stderr)
                continue
            family.pop("model_type", None)  # the file says the type
            family["checked"] = f"xorbitsai/inference@{commit[:10]} {source}"
            family = fix(family)
            if "checked_note" in family:
                family["checked"] += "; " + family.pop("checked_note")
            generated.append(family)
        out_path.write_text(_dump(kept + generated))
        print(f"{target}: {len(kept)} by hand + {len(generated)} from {source}")


def _dump(families: list[dict]) -> str:
    """One family per block, one spec per line: readable diffs."""
    blocks = []
    for family in families:
        specs = family.get("specs", [])
        head = {k: v for k, v in family.items() if k != "specs"}
        lines = [json.dumps(head, ensure_ascii=False)[:-1] + ', "specs": [']
        lines += [f"    {json.dumps(s, ensure_ascii=False)}," for s in specs]
        lines[-1] = lines[-1].rstrip(",")
        lines.append("  ]}")
        blocks.append("  " + "\n".join(lines))
    return "[\n" + ",\n".join(blocks) + "\n]\n"


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
