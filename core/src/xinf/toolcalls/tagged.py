"""Formats that open a tool-call section with a tag: the state machine they share."""

from __future__ import annotations

from typing import Any

from xinf.toolcalls.base import WHITESPACE, ToolCallParser, partial_suffix


class TaggedParser(ToolCallParser):
    """Content until ``start_tag``, then a section read by ``reader()``, closed by ``end_tag`` if any.

    Whitespace between sections is dropped.  A section that is not a valid call
    (bad JSON, no name) is given back as content, tags included, unless some
    of its calls were already sent; one cut short by the end of the output is
    given back the same way.
    """

    start_tag = ""
    end_tag = ""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "text"
        self.pending = ""
        self.raw: list[str] = []  # the current section's text, given back if it is not a call
        self.reader: Any = None
        self.emitted_before = 0
        self.gap = False  # right after a section: leading whitespace is dropped

    def reader_for_section(self) -> Any:
        raise NotImplementedError

    def _run(self, text: str, final: bool) -> None:
        text = self.pending + text
        self.pending = ""
        while text:
            if self.mode == "text":
                pos = text.find(self.start_tag)
                if pos < 0:
                    keep = 0 if final else partial_suffix(text, self.start_tag)
                    self._text(text[: len(text) - keep])
                    self.pending = text[len(text) - keep :]
                    return
                self._text(text[:pos])
                text = text[pos + len(self.start_tag) :]
                self._open()
            elif self.mode == "section":
                text = self._section(text)
            else:  # "close": after the JSON, waiting for the end tag
                stripped = text.lstrip(WHITESPACE)
                self.raw.append(text[: len(text) - len(stripped)])
                if not stripped:
                    text = ""
                    break
                if stripped.startswith(self.end_tag):
                    text = stripped[len(self.end_tag) :]
                    self._close()
                elif self.end_tag.startswith(stripped) and not final:
                    self.pending = stripped
                    return
                else:
                    text = stripped  # no end tag: the section ends with its JSON
                    self._close()
        if final:
            self._end()

    def _section(self, text: str) -> str:
        for i, ch in enumerate(text):
            self.raw.append(ch)
            self.reader.push(ch)
            if self.reader.failed:
                self._give_back()
                return text[i + 1 :]
            if self.reader.done:
                rest = text[i + 1 :]
                if self.end_tag:
                    self.mode = "close"
                else:
                    self._close()
                return rest
        return ""

    def _open(self) -> None:
        self.mode = "section"
        self.raw = [self.start_tag]
        self.emitted_before = self.emitter.count
        self.reader = self.reader_for_section()

    def _close(self) -> None:
        self.mode = "text"
        self.raw = []
        self.reader = None
        self.gap = True

    def _give_back(self) -> None:
        if self.emitter.count == self.emitted_before:
            self._text("".join(self.raw), plain=True)
        self.mode = "text"
        self.raw = []
        self.reader = None

    def _end(self) -> None:
        if self.mode == "section":
            self._give_back()
        elif self.mode == "close":
            self._close()

    def _text(self, text: str, plain: bool = False) -> None:
        if self.gap and not plain:
            text = text.lstrip(WHITESPACE)
            if not text:
                return
        self.gap = False
        self.content(text)
