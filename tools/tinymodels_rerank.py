"""A tiny random-weight cross-encoder of the real architecture, built offline: ``BertForSequenceClassification``.

bge-reranker-base/large are XLM-RoBERTa sequence classifiers and the ms-marco
MiniLM rerankers are BERT ones: one label, scores through a sigmoid.  This
builds a BERT one (2 layers, hidden 32) with a WordPiece tokenizer trained on
``tinymodels_corpus.txt`` and ``model_max_length`` 64 (so tests can make a
document longer than the model takes).  Its scores are meaningless; tests
compare them with sentence-transformers' ``CrossEncoder`` on the same files.

    import tinymodels_rerank
    path = tinymodels_rerank.ensure()     # cached under <repo>/.cache/models/

Needs torch and transformers (the transformers engine's environment).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

VERSION = 2
MAX_LENGTH = 64
HERE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    return Path(os.environ.get("XINF_MODELS_CACHE") or HERE.parent / ".cache" / "models")


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
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"rerank-tiny-v{VERSION}-s{seed}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=".rerank-tiny-", dir=root))
    try:
        write(tmp, seed)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


if __name__ == "__main__":
    print(ensure(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
