"""LLM-style rerankers (Qwen3-Reranker): a causal LM judges each (query, document) pair and answers "yes" or "no".

The score is P("yes") from the last position's logits restricted to the two
answer tokens, softmax(no, yes)[yes], with the prompt format of Qwen3-Reranker's
model card: a fixed system message, the user turn ``<Instruct>: ...\\n<Query>:
...\\n<Document>: ...`` and an empty think block opening the assistant's answer.
The instruction defaults to the card's web-search one (launch option
``rerank_instruction`` changes it).  The user turn is cut at its end when the
whole prompt would pass the model's maximum length, as the card does.
"""

from __future__ import annotations

from typing import Any

from xinf.errors import LaunchError
from xinf.operations import RerankRequest, RerankResult
from xinf_transformers.rerank import RerankModel

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
#: the card's maximum length; longer-context checkpoints are still cut here unless context_length says otherwise
DEFAULT_MAX_LENGTH = 8192
#: model types whose checkpoints follow Qwen3-Reranker's format
SERVED = ("qwen3",)


def user_turn(instruction: str, query: str, document: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def token(tokenizer: Any, text: str) -> int:
    """The id of ``text`` as one vocabulary token (the answers are scored as single tokens)."""
    value = tokenizer.convert_tokens_to_ids(text)
    if value is None or value == tokenizer.unk_token_id:
        raise LaunchError(f"the tokenizer has no {text!r} token: not a Qwen3-Reranker-style model")
    return int(value)


class LlmRerankModel(RerankModel):
    """A loaded causal LM scoring pairs by its "yes" probability (Qwen3-Reranker)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int, max_length: int, instruction: str | None):
        super().__init__(model, tokenizer, batch_size)
        self.max_length = max_length
        self.instruction = instruction or DEFAULT_INSTRUCTION
        self.prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.room = max_length - len(self.prefix) - len(self.suffix)  # tokens left for the user turn
        if self.room < 1:
            raise LaunchError(f"a context of {max_length} tokens leaves no room for a document", param="context_length")
        self.yes = token(tokenizer, "yes")
        self.no = token(tokenizer, "no")
        pad = tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else tokenizer.eos_token_id or 0)

    def score(self, request: RerankRequest) -> RerankResult:
        turns = [user_turn(self.instruction, request.query, d) for d in request.documents]
        bodies = self.tokenizer(turns, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        prompts = [self.prefix + list(ids[: self.room]) + self.suffix for ids in bodies]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths batch together
        scores = [0.0] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, value in zip(batch, self.yes_probability([prompts[i] for i in batch])):
                scores[i] = value
        return RerankResult(
            scores=scores,
            tokens=[len(p) for p in prompts],
            truncated=[i for i, ids in enumerate(bodies) if len(ids) > self.room],
        )

    def yes_probability(self, prompts: list[list[int]]) -> list[float]:
        import torch

        self.batches += 1
        width = max(len(p) for p in prompts)
        # Left padding: every prompt's last token sits in the last column, where the answer is read.
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each prompt counts from 0 whatever its padding
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1, :]
        pair = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1).float()
        return [float(p) for p in torch.softmax(pair, dim=1)[:, 1].tolist()]


def is_llm_reranker(architectures: list[str]) -> bool:
    return any(str(a).endswith("ForCausalLM") for a in architectures)


def load(path: str, model_type: str, dtype: Any, device: str, opts: Any, settings: Any) -> LlmRerankModel:
    """Load a causal LM checkpoint as a reranker; other causal LMs than Qwen3's are refused with the reason."""
    if model_type not in SERVED:
        raise LaunchError(
            f"{path} is a {model_type or 'causal LM'} checkpoint: the transformers engine serves LLM-style rerankers "
            f"of Qwen3-Reranker's format ({', '.join(SERVED)} models) and cross-encoders (sequence classifiers)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=opts.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=opts.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise LaunchError(f"transformers could not load {path} as an LLM-style reranker: {exc}") from None
    positions = int(getattr(model.config, "max_position_embeddings", 0) or DEFAULT_MAX_LENGTH)
    max_length = opts.context_length or min(positions, DEFAULT_MAX_LENGTH)
    return LlmRerankModel(model.to(device).eval(), tokenizer, settings.batch_size, max_length, opts.rerank_instruction)
