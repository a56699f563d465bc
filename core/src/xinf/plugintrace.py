"""``XINF_TRACE_PLUGINS=1``: every call of an engine plugin's hook, written to stderr.

For plugin authors (see docs/plugins.md, "Debugging").  Each call prints a line
when it starts, with its arguments, and one when it ends, with what it returned
or raised and how long it took.  A ``generate`` stream is reported when it ends
(its chunk count and finish reason); a coroutine (``load``, ``embed``) when it
is awaited.  The server traces ``match_model`` and ``estimate_vram``; a replica
process traces ``load``, ``generate``, ``embed`` and ``unload`` into its log
(``GET /v1/models/{uid}`` gives the path).

Off (the default), hooks are called directly and this module is never used.
"""

from __future__ import annotations

import inspect
import os
import reprlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

VARIABLE = "XINF_TRACE_PLUGINS"
_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 200
_repr.maxlist = 8
_repr.maxdict = 8


def enabled() -> bool:
    """Whether ``XINF_TRACE_PLUGINS`` asks for tracing (set and not ``0``)."""
    return os.environ.get(VARIABLE, "") not in ("", "0")


def traced(engine: str, hook: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (hook ``hook`` of ``engine``), reporting each call on stderr."""

    def call(**kwargs: Any) -> Any:
        name = f"{engine}.{hook}"
        say(f"{name}({', '.join(f'{k}={short(v)}' for k, v in kwargs.items())})")
        start = time.perf_counter()
        try:
            result = function(**kwargs)
        except BaseException as exc:
            say(f"{name} raised {type(exc).__name__}: {exc} ({_ms(start)})")
            raise
        if inspect.isawaitable(result):
            return _awaited(name, result, start)
        if hasattr(result, "__aiter__"):
            return _streamed(name, result, start)
        say(f"{name} -> {short(result)} ({_ms(start)})")
        return result

    call.__name__ = getattr(function, "__name__", hook)
    call.__doc__ = function.__doc__
    return call


async def _awaited(name: str, result: Awaitable[Any], start: float) -> Any:
    try:
        value = await result
    except BaseException as exc:
        say(f"{name} raised {type(exc).__name__}: {exc} ({_ms(start)})")
        raise
    say(f"{name} -> {short(value)} ({_ms(start)})")
    return value


async def _streamed(name: str, stream: AsyncIterator[Any], start: float) -> AsyncIterator[Any]:
    count, finish, outcome = 0, None, "closed early"
    try:
        async for chunk in stream:
            count += 1
            finish = getattr(chunk, "finish_reason", None) or finish
            yield chunk
        outcome = f"finish_reason={finish}"
    except BaseException as exc:
        outcome = f"raised {type(exc).__name__}: {exc}"
        raise
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()  # the engine frees the request's slot, as without tracing
        say(f"{name} -> {count} chunks, {outcome} ({_ms(start)})")


def short(value: Any) -> str:
    """A value as a trace line shows it: cut to a readable length."""
    return _repr.repr(value)


def say(line: str) -> None:
    print(f"xinf trace [{os.getpid()}] {line}", file=sys.stderr, flush=True)


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.1f} ms"
