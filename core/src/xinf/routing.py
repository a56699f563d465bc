"""Which replica serves a request: the least busy one, or the one most likely to hold its prompt's prefix.

An engine keeps the prompt it has just processed (llama.cpp in its slots, vLLM in its prefix cache), so the next
turn of a conversation, or another request with the same long system prompt or tool preamble, starts much sooner
on the replica that served the earlier one.  Least-busy routing scatters such requests over the replicas and
throws that away.

``prefix`` routing keeps an approximate view, in the server, of the prompts each replica was given: the prompt's
text is cut into blocks and each block is named by a hash chained over everything before it, so that one key names
a whole prefix (the idea of SGLang's cache-aware router, without a tree: a bounded LRU table of keys).  A request
goes to the replica holding the longest run of its keys, unless the replicas' loads are out of balance, in which
case the least busy wins: one hot prefix cannot pile every request onto one replica.  With no match it is
least-busy routing.  No engine support is needed; the view is approximate (an engine may have evicted what the
table remembers), which only costs a cache miss.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import msgspec

ROUTINGS = ("least_busy", "prefix")
#: characters of prompt text per block (about 16-32 tokens): short enough that a shared system prompt of a few
#: hundred tokens spans many blocks, long enough that the table stays small
BLOCK = 96
#: prefix keys remembered per model (LRU): ~100 k blocks is ~10 MB of text's worth of prompts, about 5 MB of table
CAPACITY = 100_000
#: loads count as out of balance when the busiest replica has this many more requests than the least busy ...
BALANCE_ABS = 4
#: ... and more than this multiple of them
BALANCE_REL = 1.5


class Candidate(Protocol):
    """What routing needs of a replica."""

    @property
    def index(self) -> int: ...

    @property
    def inflight(self) -> int: ...


C = TypeVar("C", bound=Candidate)


def prompt_text(messages: list[dict[str, Any]] | None, prompt: str | None, tools: Any = None) -> str:
    """The text a request's prompt is made of, in the order an engine sees it (tools first, as templates put them)."""
    if messages is None:
        return prompt or ""
    head = msgspec.json.encode(tools).decode() if tools else ""
    parts = [head]
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            content = msgspec.json.encode(content).decode()
        calls = message.get("tool_calls")
        extra = msgspec.json.encode(calls).decode() if calls else ""
        parts.append(f"\x1e{message.get('role', '')}\x1f{content}{extra}")
    return "".join(parts)


def prefix_keys(text: str, block: int = BLOCK) -> list[bytes]:
    """One key per whole block of ``text``, each naming everything up to the end of that block."""
    keys = []
    previous = b""
    data = text.encode("utf-8", errors="replace")
    size = block * 2  # bytes: about a block of characters for mostly one- and two-byte text
    for start in range(0, len(data) - size + 1, size):
        previous = hashlib.blake2b(previous + data[start : start + size], digest_size=12).digest()
        keys.append(previous)
    return keys


class PrefixTable:
    """Which replicas were last given each prompt prefix (bounded, least recently used keys dropped first)."""

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.owners: OrderedDict[bytes, set[int]] = OrderedDict()

    def matched(self, keys: Sequence[bytes], replicas: set[int]) -> dict[int, int]:
        """For each of ``replicas`` holding the first key: how many leading keys it holds."""
        depth: dict[int, int] = {}
        alive = set(replicas)
        for n, key in enumerate(keys):
            owners = self.owners.get(key)
            alive &= owners if owners is not None else set()
            if not alive:
                break
            for replica in alive:
                depth[replica] = n + 1
        return depth

    def record(self, keys: Sequence[bytes], replica: int) -> None:
        for key in keys:
            owners = self.owners.get(key)
            if owners is None:
                self.owners[key] = {replica}
            else:
                owners.add(replica)
                self.owners.move_to_end(key)
        while len(self.owners) > self.capacity:
            self.owners.popitem(last=False)

    def forget(self, replica: int) -> None:
        """A replica restarted or went away: its cache is empty."""
        for key in [k for k, owners in self.owners.items() if replica in owners]:
            owners = self.owners[key]
            owners.discard(replica)
            if not owners:
                del self.owners[key]


def least_busy(candidates: Sequence[C]) -> C:
    """The first candidate with the fewest requests in flight (callers rotate the order among ties)."""
    best = candidates[0]
    for c in candidates[1:]:
        if c.inflight < best.inflight:
            best = c
    return best


def balanced(candidates: Sequence[Candidate]) -> bool:
    loads = [c.inflight for c in candidates]
    high, low = max(loads), min(loads)
    return not (high - low > BALANCE_ABS and high > low * BALANCE_REL)


def by_prefix(candidates: Sequence[C], table: PrefixTable, keys: Sequence[bytes]) -> C:
    """The candidate holding the longest prefix of ``keys`` (least busy among equals), while loads are balanced."""
    if not keys or len(candidates) == 1 or not balanced(candidates):
        return least_busy(candidates)
    depth = table.matched(keys, {c.index for c in candidates})
    if not depth:
        return least_busy(candidates)
    deepest = max(depth.values())
    return least_busy([c for c in candidates if depth.get(c.index) == deepest])
