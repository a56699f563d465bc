"""Cheaper top-k and top-p steps for transformers' continuous batching, with the same results.

The batch runner samples every request (a greedy one asks for ``top_k=1``, see ``batching``), through
transformers' per-request top-k and top-p processors.  Each of them sorts the whole vocabulary of every row at
every step: on a CPU, for 16 rows, a few milliseconds a step, a tenth of a small model's step.  Here:

- top-k takes the k-th largest value of each row from ``torch.topk`` with the largest k the batch asks for
  (k = 1: the maximum), not from a full sort; rows that keep the whole vocabulary are left alone;
- top-p does nothing when no row asks for less than 1 (every token kept: a full sort then removes only tokens
  whose probability is already 0).

Applied on the CPU only, where it was measured (on a GPU the batch's largest k would cost a synchronisation).
"""

from __future__ import annotations

from typing import Any


def speed_up(manager: Any) -> int:
    """Swap the manager's top-k and top-p processors for these; returns how many were swapped."""
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingTopKLogitsWarper,
        ContinuousBatchingTopPLogitsWarper,
    )

    class TopK(ContinuousBatchingTopKLogitsWarper):
        def __call__(self, scores: Any, tensor_arg: Any) -> Any:
            import torch

            vocab = scores.size(-1)
            top_k = tensor_arg[: scores.size(0)].clamp(min=1, max=vocab)
            limited = top_k < vocab
            if not bool(limited.any()):
                return scores
            k = int(top_k[limited].max())
            largest = torch.topk(scores, k, dim=-1).values  # [B, k], descending
            thresholds = largest.gather(-1, (top_k.clamp(max=k) - 1).unsqueeze(-1).to(torch.int64))
            thresholds = thresholds.masked_fill(~limited.unsqueeze(-1), float("-inf"))
            return scores.masked_fill(scores < thresholds, self.filter_value)

    class TopP(ContinuousBatchingTopPLogitsWarper):
        def __call__(self, scores: Any, tensor_arg: Any) -> Any:
            import torch

            top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
            if bool((top_p >= 1.0).all()):
                return scores
            return super().__call__(scores, tensor_arg)

    swapped = 0
    for processor in manager.logit_processor.logits_processor:
        if type(processor) is ContinuousBatchingTopKLogitsWarper:
            processor.__class__ = TopK
            swapped += 1
        elif type(processor) is ContinuousBatchingTopPLogitsWarper:
            processor.__class__ = TopP
            swapped += 1
    return swapped
