"""A tiny random-weight LLaVA (image-text-to-text) model, built offline.

A real architecture with a real processor: ``LlavaForConditionalGeneration``
(a 2-layer CLIP vision tower, the LLaVA MLP projector, a 2-layer Llama), a
``LlavaProcessor`` (``CLIPImageProcessor`` resizing to 56x56, so each image is
(56/14)^2 = 16 ``<image>`` tokens) and a ChatML chat template that writes
``<image>`` where the messages hold an image part.  The tokenizer is the one
every ``tinymodels`` model shares, plus the ``<image>`` token.  Weights are
random (seeded): what it writes is gibberish, tests never assert on the words.

Needs torch and transformers (the models and the processor write their own
files).  Cached like the other tiny models under ``<repo>/.cache/models/``
(``XINF_MODELS_CACHE``), keyed by the parameters, ``VERSION`` and the
transformers version (processor files change between releases)::

    import tinymodels_vision
    path = tinymodels_vision.ensure()

or ``python tools/tinymodels_vision.py`` (prints the directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tinymodels import cache_dir
from tinymodels_tokenizer import CORPUS, EOS, PAD, train_tokenizer

VERSION = 1
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 56
PATCH = 14
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2

# ChatML, with "<image>\n" for each image part and the text parts joined.
TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for part in message.content %}"
    "{%- if part.type == 'image' %}{{- '<image>\\n' }}"
    "{%- elif part.type == 'text' %}{{- part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def write_llava(path: Path, seed: int = 0) -> Path:
    """Write the model directory at ``path`` (created)."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    eos, pad, image = (tok.token_to_id(t) for t in (EOS, PAD, IMAGE_TOKEN))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=4096)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        image_token=IMAGE_TOKEN,
        chat_template=TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
            projection_dim=64,
        ),
        text_config=LlamaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=4096,
            eos_token_id=eos,
            pad_token_id=pad,
            bos_token_id=pad,
        ),
        image_token_index=image,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    config.xinf_tinymodels = {"version": VERSION, "seed": seed}  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = [eos, pad]
    model.generation_config.pad_token_id = pad
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def key(seed: int) -> str:
    import transformers

    described = {
        "version": VERSION,
        "seed": seed,
        "transformers": transformers.__version__,
        "corpus": hashlib.sha256(CORPUS.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def ensure(seed: int = 0) -> Path:
    """The cached model directory (built now if missing)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"llava-tiny-{key(seed)}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=".llava-tiny-", dir=root))
    try:
        write_llava(tmp, seed)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    print(ensure(int(args[0]) if args else 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
