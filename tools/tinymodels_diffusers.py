"""A tiny random-weight Stable Diffusion pipeline of the real architecture, built offline for diffusers.

The same components as stable-diffusion-v1-5 (``StableDiffusionPipeline``: a
CLIP text encoder, a ``UNet2DConditionModel`` with cross-attention, an
``AutoencoderKL`` and a DDIM scheduler), each a few layers of width 32, with a
WordPiece tokenizer trained on ``tinymodels_corpus.txt``.  It draws noise-like
pictures in well under a second a step on a CPU; tests check shapes, seeds and
batching, never what the picture shows.

    import tinymodels_diffusers
    path = tinymodels_diffusers.ensure()    # cached under <repo>/.cache/models/

Needs torch, transformers and diffusers (the diffusers engine's environment).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tinymodels_cache import cached

VERSION = 1
HERE = Path(__file__).resolve().parent


def write(out: Path, seed: int = 0) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train([str(HERE / "tinymodels_corpus.txt")], trainers.WordPieceTrainer(vocab_size=600, special_tokens=special))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=77, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
        eos_token="[EOS]",
    )  # fmt: skip
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=64,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)


def ensure(seed: int = 0) -> Path:
    """The cached tiny pipeline (built now if missing)."""
    return cached(f"sd-tiny-v{VERSION}-s{seed}", lambda out: write(out, seed))


if __name__ == "__main__":
    print(ensure(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
