"""The n-gram model itself: counts of which word follows which, sampling, embeddings.

A model is a plain text file.  Loading counts, for every run of ``order - 1``
words, the words that follow it; generating picks the next word from those
counts (the most frequent at temperature 0).  Words are runs of non-space
characters, so a word ending in ``.``, ``!`` or ``?`` ends a sentence: that is
the model's end of sequence.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from xinf.errors import ContextLengthExceeded, InvalidRequest, LaunchError
from xinf.stops import StopMatcher
from xinf.types import Chunk, EmbedResult, GenerateRequest, TokenLogprob, Usage

WORD = re.compile(r"\S+")
SENTENCE_END = (".", "!", "?")


class NgramOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Launch options (``xinf launch ... --order 3``); an unknown one fails the launch, naming it."""

    order: int = 2  # words of context + 1: 2 is a bigram model
    context_length: int = 1024  # prompt words accepted; a longer prompt is a 400

    @classmethod
    def parse(cls, options: dict[str, object]) -> NgramOptions:
        try:
            parsed = msgspec.convert(options, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise LaunchError(f"invalid ngram option: {exc}") from None
        if parsed.order < 1:
            raise LaunchError(f"order must be at least 1, not {parsed.order}")
        return parsed


def words_of(text: str) -> list[str]:
    return WORD.findall(text)


class NgramModel:
    """A loaded corpus: for each context (the previous ``order - 1`` words), the counts of the next word."""

    def __init__(self, words: list[str], options: NgramOptions):
        if not words:
            raise LaunchError("the corpus has no words")
        self.options = options
        self.context = options.order - 1
        self.table: dict[tuple[str, ...], Counter[str]] = {}
        for i, word in enumerate(words):
            key = tuple(words[max(0, i - self.context) : i])
            if len(key) == self.context:
                self.table.setdefault(key, Counter())[word] += 1
        # Words that start a sentence: where generation begins when the prompt's last words are unknown.
        self.starts = Counter(w for prev, w in zip([".", *words], words) if prev.endswith(SENTENCE_END))
        self.vocabulary = sorted(set(words))  # token id i is the i-th word

    @classmethod
    def from_file(cls, path: Path, options: NgramOptions) -> NgramModel:
        if not path.is_file():
            raise LaunchError(f"{path} is not a text file")
        return cls(words_of(path.read_text(encoding="utf-8")), options)

    # ------------------------------------------------------------ generation

    async def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        """One choice of ``request``, a word per chunk; the last chunk has the finish reason and usage."""
        prompt = prompt_words(request)
        if len(prompt) > self.options.context_length:
            raise ContextLengthExceeded(
                f"the prompt has {len(prompt)} words; this model takes {self.options.context_length} "
                "(launch option context_length)",
                param="messages" if request.is_chat else "prompt",
            )
        rng = random.Random(request.seed)
        temperature = 1.0 if request.temperature is None else request.temperature
        history = list(prompt)
        stops = StopMatcher(request.stop)
        limit = request.max_tokens if request.max_tokens is not None else 64
        produced, finish = 0, "length"
        while produced < limit:
            word, logprobs = self.next_word(history, rng, temperature, request.top_k, request.logprobs)
            history.append(word)
            produced += 1
            text, stopped = stops.feed(word if produced == 1 else " " + word)
            if stopped:
                finish = "stop"
                yield Chunk(text=text)
                break
            yield Chunk(text=text, logprobs=logprobs)
            if word.endswith(SENTENCE_END) and not request.ignore_eos:
                finish = "stop"
                break
            await asyncio.sleep(0)  # let other requests and cancellation in between words
        tail = stops.flush()
        yield Chunk(text=tail, finish_reason=finish, usage=Usage(prompt_tokens=len(prompt), completion_tokens=produced))

    def next_word(
        self, history: list[str], rng: random.Random, temperature: float, top_k: int | None, logprobs: int | None
    ) -> tuple[str, list[TokenLogprob] | None]:
        counts = self.table.get(tuple(history[-self.context :]) if self.context else ())
        if not counts or len(history) < self.context:
            counts = self.starts  # an unknown context: start a new sentence
        ranked = counts.most_common(top_k if top_k and top_k > 0 else None)
        if temperature <= 0:
            word = ranked[0][0]
        else:
            weights = [count ** (1.0 / temperature) for _, count in ranked]
            word = rng.choices([w for w, _ in ranked], weights=weights)[0]
        if logprobs is None:
            return word, None
        total = sum(counts.values())
        top = [(w, math.log(c / total)) for w, c in ranked[:logprobs]]
        return word, [TokenLogprob(token=word, logprob=math.log(counts[word] / total), top_logprobs=top)]

    def tokens(self, ids: list[list[int]]) -> list[list[str]]:
        """The word of each token id; an id outside the vocabulary is the client's mistake (400)."""
        bad = [i for row in ids for i in row if not 0 <= i < len(self.vocabulary)]
        if bad:
            raise InvalidRequest(
                f"token ids {bad[:5]} are outside the vocabulary (0-{len(self.vocabulary) - 1})", param="input"
            )
        return [[self.vocabulary[i] for i in row] for row in ids]

    # ------------------------------------------------------------ embeddings

    @staticmethod
    def embed(texts: list[str], dimensions: int | None) -> EmbedResult:
        """Hashed bag-of-words vectors, unit length: texts sharing words point the same way."""
        size = dimensions or 64
        vectors = []
        for text in texts:
            vector = [0.0] * size
            for word in words_of(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                vector[int.from_bytes(digest[:4], "little") % size] += 1.0 if digest[4] % 2 else -1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vectors.append([v / norm for v in vector])
        return EmbedResult(embeddings=vectors, prompt_tokens=sum(len(words_of(t)) for t in texts))


def prompt_words(request: GenerateRequest) -> list[str]:
    """The words the model continues: the prompt, or every message's text in order."""
    if request.messages is None:
        return words_of(request.prompt or "")
    words: list[str] = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            words += words_of(content)
    return words
