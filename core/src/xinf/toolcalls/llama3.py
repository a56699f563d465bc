"""Llama 3.1/3.2 JSON format: the whole answer is ``{"name": ..., "parameters": {...}}``.

The answer may start with ``<|python_tag|>``; several calls are separated by
``;``.  An answer that does not start with ``{`` is plain content.  The same
reader takes the output of constrained decoding (a bare JSON call object).
"""

from __future__ import annotations

from xinf.toolcalls.base import WHITESPACE, CallsReader, ToolCallParser

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonParser(ToolCallParser):
    """A JSON call object (or several, ``;``-separated) as the whole answer."""

    name = "llama3_json"
    tags = (PYTHON_TAG,)

    def __init__(self) -> None:
        super().__init__()
        self.mode = "start"
        self.pending = ""
        self.raw: list[str] = []
        self.reader: CallsReader | None = None

    def _run(self, text: str, final: bool) -> None:
        text = self.pending + text
        self.pending = ""
        while text:
            if self.mode == "start":
                stripped = text.lstrip(WHITESPACE)
                if stripped.startswith(PYTHON_TAG):
                    stripped = stripped[len(PYTHON_TAG) :].lstrip(WHITESPACE)
                    self.raw.append(text[: len(text) - len(stripped)])
                    text = stripped
                    if not text:
                        break
                if not stripped or (PYTHON_TAG.startswith(stripped) and not final):
                    self.pending = text
                    return
                if stripped[0] == "{":
                    self.raw.append(text[: len(text) - len(stripped)])
                    self.mode, text = "call", stripped
                    self.reader = CallsReader(self.emitter, allow_list=False)
                else:
                    self.mode = "content"
                    self.content("".join(self.raw))
                    self.raw = []
            elif self.mode == "content":
                self.content(text)
                text = ""
            elif self.mode == "call":
                assert self.reader is not None
                for i, ch in enumerate(text):
                    self.raw.append(ch)
                    self.reader.push(ch)
                    if self.reader.failed:
                        self._give_back()
                        text = text[i + 1 :]
                        break
                    if self.reader.done:
                        self.mode, text = "between", text[i + 1 :]
                        break
                else:
                    text = ""
            else:  # "between": after a call, ";" starts another; anything else is content
                stripped = text.lstrip(WHITESPACE)
                if not stripped:
                    text = ""
                elif stripped[0] == ";":
                    self.mode, text = "call", stripped[1:]
                    self.raw = []
                    self.reader = CallsReader(self.emitter, allow_list=False)
                else:
                    self.mode = "content"
                    text = stripped
        if final and self.mode in ("start", "call"):
            self._give_back()

    def _give_back(self) -> None:
        if not self.called:
            self.content("".join(self.raw) + self.pending)
        self.pending = ""
        self.raw = []
        self.mode = "content"
