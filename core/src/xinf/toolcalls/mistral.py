"""Mistral format: ``[TOOL_CALLS]`` then a JSON array of calls, or (v11+ tokenizers) ``name[ARGS]{...}`` per call."""

from __future__ import annotations

from typing import Any

from xinf.toolcalls.base import WHITESPACE, ArgumentsReader, CallsReader, Emitter
from xinf.toolcalls.tagged import TaggedParser

ARGS_TAG = "[ARGS]"


class NameArgsReader:
    """``name[ARGS]{...}``: the name up to the tag, then streamed arguments."""

    def __init__(self, emitter: Emitter):
        self.emitter = emitter
        self.name: list[str] = []
        self.args: ArgumentsReader | None = None
        self.failed = False

    @property
    def done(self) -> bool:
        return self.args is not None and self.args.done

    def push(self, ch: str) -> None:
        if self.args is not None:
            self.args.push(ch)
            self.failed = self.args.failed
            return
        self.name.append(ch)
        text = "".join(self.name)
        if text.endswith(ARGS_TAG):
            name = text[: -len(ARGS_TAG)].strip()
            if not name or any(c in name for c in WHITESPACE + '{}[]"'):
                self.failed = True
                return
            self.args = ArgumentsReader(self.emitter, self.emitter.header(name))
        elif len(text) > 256:
            self.failed = True


class MistralSection:
    """Decides on the first character which of the two layouts follows the tag."""

    def __init__(self, emitter: Emitter):
        self.emitter = emitter
        self.inner: Any = None
        self.failed = False
        self.done = False

    def push(self, ch: str) -> None:
        if self.inner is None:
            if ch in WHITESPACE:
                return
            self.inner = CallsReader(self.emitter) if ch in "[{" else NameArgsReader(self.emitter)
        self.inner.push(ch)
        self.failed, self.done = self.inner.failed, self.inner.done


class MistralParser(TaggedParser):
    """``[TOOL_CALLS]`` sections; text before the first is content."""

    name = "mistral"
    start_tag = "[TOOL_CALLS]"
    end_tag = ""
    tags = ("[TOOL_CALLS]", ARGS_TAG)

    def reader_for_section(self) -> Any:
        return MistralSection(self.emitter)
