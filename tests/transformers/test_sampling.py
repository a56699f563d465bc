"""xinf_transformers.sampling: the faster top-k and top-p steps mask exactly what transformers' own do."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers.generation.continuous_batching.cb_logits_processors import (  # noqa: E402
    ContinuousBatchingTopKLogitsWarper,
    ContinuousBatchingTopPLogitsWarper,
)
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper  # noqa: E402

from xinf_transformers.sampling import speed_up  # noqa: E402

VOCAB = 1294


def processors() -> tuple[object, object]:
    return (
        ContinuousBatchingTopKLogitsWarper(TopKLogitsWarper(top_k=VOCAB // 2)),
        ContinuousBatchingTopPLogitsWarper(TopPLogitsWarper(top_p=0.5)),
    )


@pytest.fixture(scope="module")
def pair() -> tuple[tuple[object, object], tuple[object, object]]:
    """transformers' processors, and the same swapped by ``speed_up`` (as in a manager)."""
    fast = processors()
    manager = SimpleNamespace(logit_processor=SimpleNamespace(logits_processor=list(fast)))
    assert speed_up(manager) == 2
    return processors(), fast


@pytest.mark.parametrize("seed", range(40))
def test_top_k_masks_what_a_full_sort_masks(pair: tuple, seed: int) -> None:
    (top_k, _), (fast_k, _) = pair
    g = torch.Generator().manual_seed(seed)
    rows = int(torch.randint(1, 17, (1,), generator=g))
    scores = torch.randn(rows, VOCAB, generator=g)
    if seed % 3 == 0:
        scores = scores.round(decimals=1)  # ties at the threshold
    ks = torch.tensor([1, 2, 5, 40, VOCAB, VOCAB + 5])[torch.randint(0, 6, (rows,), generator=g)]
    if seed % 4 == 0:
        ks = torch.full((rows,), VOCAB)  # no row limited: nothing masked
    args = torch.cat([ks, torch.zeros(4, dtype=ks.dtype)]).to(torch.int32)  # the manager's storage is longer
    assert torch.equal(top_k(scores, args), fast_k(scores, args))


@pytest.mark.parametrize("seed", range(20))
def test_top_p_masks_what_a_full_sort_masks(pair: tuple, seed: int) -> None:
    (_, top_p), (_, fast_p) = pair
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(8, VOCAB, generator=g) * 4
    scores[:, :100] = float("-inf")  # masked by top-k before: probability 0
    keep_all = seed % 2 == 1
    ps = torch.ones(8) if keep_all else torch.rand(8, generator=g)
    args = torch.cat([ps, torch.zeros(4)]).view(torch.int32)
    slow, fast = top_p(scores, args), fast_p(scores, args)
    if keep_all:
        differ = slow != fast
        assert (scores.softmax(-1)[differ] == 0).all()  # only tokens that can never be drawn
        assert torch.equal(fast, scores)
    else:
        assert torch.equal(slow, fast)
