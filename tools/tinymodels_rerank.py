"""A tiny random-weight cross-encoder of the real architecture, built offline: ``BertForSequenceClassification``.

bge-reranker-base/large are XLM-RoBERTa sequence classifiers and the ms-marco
MiniLM rerankers are BERT ones: one label, scores through a sigmoid.  This
builds a BERT one (2 layers, hidden 32) with a WordPiece tokenizer trained on
``tinymodels_corpus.txt`` and ``model_max_length`` 64 (so tests can make a
document longer than the model takes).  Its scores are meaningless; tests
compare them with sentence-transformers' ``CrossEncoder`` on the same files.

``ensure_qwen3`` builds an LLM-style reranker of Qwen3-Reranker's kind: a tiny
``Qwen3ForCausalLM`` (``tinymodels``' generator and tokenizer) whose vocabulary
holds ``yes`` and ``no`` as plain tokens, as Qwen's does: a pair's score is
P("yes") at the last position.  No merge produces them, so the tokenizer splits
text exactly as ``tinymodels``' does; its context is 256 tokens, so tests can
make a document longer than the model takes.

    import tinymodels_rerank
    path = tinymodels_rerank.ensure()          # cached under <repo>/.cache/models/
    qwen3 = tinymodels_rerank.ensure_qwen3()

``ensure`` needs torch and transformers (the transformers engine's environment);
``ensure_qwen3`` numpy and tokenizers only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from tinymodels_cache import cached

VERSION = 2
MAX_LENGTH = 64
QWEN3_VERSION = 1
QWEN3_CONTEXT = 256
WIDEN = 4.0
HERE = Path(__file__).resolve().parent


def write(out: Path, seed: int = 0) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train([str(HERE / "tinymodels_corpus.txt")], trainers.WordPieceTrainer(vocab_size=800, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=MAX_LENGTH)
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
        initializer_range=0.5,  # wide random weights: scores spread over (0, 1) rather than all near 0.5
        architectures=["BertForSequenceClassification"],
    )
    BertForSequenceClassification(config).save_pretrained(out)


def ensure(seed: int = 0) -> Path:
    """The cached tiny cross-encoder (built now if missing)."""
    return cached(f"rerank-tiny-v{VERSION}-s{seed}", lambda out: write(out, seed))


def write_qwen3(out: Path, seed: int = 0) -> None:
    import tinymodels
    from tinymodels_tokenizer import train_tokenizer

    # Two spare vocabulary entries past the trained ones (tinymodels names them <unused0>, <unused1>) become "yes"
    # and "no": ids the model has rows for, reachable by name only.
    shape = dataclasses.replace(
        tinymodels.PRESETS["tiny"],
        layers=2,
        hidden=64,
        heads=4,
        kv_heads=2,
        intermediate=128,
        context=QWEN3_CONTEXT,
        vocab_size=train_tokenizer().get_vocab_size() + 2,
    )
    tinymodels.write_hf(out, "qwen3", shape, dtype="float32", seed=seed)
    # Wider weights than a fresh init's N(0, 0.02): with those, the last position barely sees the document and
    # every pair scores alike; at this width the scores spread over (0, 1) like a trained reranker's.
    from safetensors.numpy import load_file, save_file

    weights = load_file(out / "model.safetensors")
    for name, tensor in weights.items():
        if not name.endswith("norm.weight"):
            tensor *= WIDEN
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    path = out / "tokenizer.json"
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab["yes"], vocab["no"] = vocab.pop("<unused0>"), vocab.pop("<unused1>")
    path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")


def ensure_qwen3(seed: int = 0) -> Path:
    """The cached tiny Qwen3-Reranker-style model (built now if missing)."""
    return cached(f"qwen3-rerank-tiny-v{QWEN3_VERSION}-s{seed}", lambda out: write_qwen3(out, seed))


if __name__ == "__main__":
    # tinymodels_rerank.py [qwen3] [SEED]
    qwen3 = sys.argv[1:2] == ["qwen3"]
    seed = int(sys.argv[2 if qwen3 else 1]) if len(sys.argv) > (2 if qwen3 else 1) else 0
    print(ensure_qwen3(seed) if qwen3 else ensure(seed))
