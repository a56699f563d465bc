"""The shared machinery of the tool-call parsers: deltas out, JSON read a character at a time.

A parser turns a model's text deltas into content deltas and OpenAI tool-call
deltas: for each call first ``{"index", "id", "type": "function", "function":
{"name", "arguments": ""}}``, then ``{"index", "function": {"arguments":
fragment}}`` as the arguments arrive.  Tags and JSON may be split anywhere
across deltas; text that turns out not to be a call is given back as content.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

WHITESPACE = " \t\r\n"


@dataclass
class Parsed:
    """What one ``feed`` produced: content text and tool-call deltas."""

    content: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class Emitter:
    """Numbers the calls of one response and writes their deltas into a ``Parsed``."""

    def __init__(self) -> None:
        self.count = 0
        self.out = Parsed()

    def header(self, name: str) -> int:
        index = self.count
        self.count += 1
        self.out.calls.append(
            {"index": index, "id": new_call_id(), "type": "function", "function": {"name": name, "arguments": ""}}
        )
        return index

    def arguments(self, index: int, text: str) -> None:
        if not text:
            return
        last = self.out.calls[-1] if self.out.calls else None
        if last is not None and last["index"] == index and set(last) == {"index", "function"}:
            last["function"]["arguments"] += text  # one fragment per feed is enough
        else:
            self.out.calls.append({"index": index, "function": {"arguments": text}})

    def take(self) -> Parsed:
        out, self.out = self.out, Parsed()
        return out


class ValueScanner:
    """Follows one JSON object or array to its end, a character at a time."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.done = False

    def push(self, ch: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif ch == "\\":
                self.escaped = True
            elif ch == '"':
                self.in_string = False
        elif ch == '"':
            self.in_string = True
        elif ch in "{[":
            self.depth += 1
        elif ch in "}]":
            self.depth -= 1
            if self.depth == 0:
                self.done = True


class ArgumentsReader:
    """Streams a JSON object of arguments as it arrives (formats that write the name outside the JSON)."""

    def __init__(self, emitter: Emitter, index: int):
        self.emitter = emitter
        self.index = index
        self.scanner = ValueScanner()
        self.started = False
        self.failed = False

    @property
    def done(self) -> bool:
        return self.scanner.done

    def push(self, ch: str) -> None:
        if not self.started:
            if ch in WHITESPACE:
                return
            if ch != "{":
                self.failed = True
                return
            self.started = True
        self.scanner.push(ch)
        self.emitter.arguments(self.index, ch)


class CallObjectReader:
    """Reads ``{"name": ..., "arguments"|"parameters": {...}}`` and emits its deltas.

    The header goes out once the name is known and the arguments begin; the
    arguments then stream as raw JSON text.  Arguments given as a JSON string
    are decoded and sent whole.  ``failed`` means this was not a call.
    """

    NAME_KEYS = ("name",)
    ARGUMENT_KEYS = ("arguments", "parameters")

    def __init__(self, emitter: Emitter):
        self.emitter = emitter
        self.state = "open"
        self.key: list[str] = []
        self.key_escaped = False
        self.current_key = ""
        self.value: list[str] = []
        self.value_kind = ""
        self.scanner: ValueScanner | None = None
        self.value_in_string = False
        self.value_escaped = False
        self.name: str | None = None
        self.args_raw: str | None = None  # complete arguments, once read
        self.args_pending: list[str] = []  # arguments read before the name was known
        self.index: int | None = None  # set once the header is out
        self.streaming = False
        self.failed = False
        self.done = False

    @property
    def emitted(self) -> bool:
        return self.index is not None

    def push(self, ch: str) -> None:
        state = self.state
        if state == "open":
            if ch == "{":
                self.state = "key_wait"
            elif ch not in WHITESPACE:
                self.failed = True
        elif state == "key_wait":
            if ch == '"':
                self.state, self.key = "key", []
            elif ch == "}":
                self._finish()
            elif ch not in WHITESPACE:
                self.failed = True
        elif state == "key":
            if self.key_escaped:
                self.key_escaped = False
                self.key.append(ch)
            elif ch == "\\":
                self.key_escaped = True
                self.key.append(ch)
            elif ch == '"':
                self.current_key = json.loads('"' + "".join(self.key) + '"')
                self.state = "colon"
            else:
                self.key.append(ch)
        elif state == "colon":
            if ch == ":":
                self.state = "value_wait"
            elif ch not in WHITESPACE:
                self.failed = True
        elif state == "value_wait":
            if ch in WHITESPACE:
                return
            self.value = []
            self.state = "value"
            if ch in "{[":
                self.value_kind = "container"
                self.scanner = ValueScanner()
                if self.current_key in self.ARGUMENT_KEYS and ch == "{" and self.name is not None:
                    self._header()
                    self.streaming = True
            elif ch == '"':
                self.value_kind = "string"
                self.value_in_string, self.value_escaped = True, False
                self.value.append(ch)
                return
            else:
                self.value_kind = "primitive"
            self._value_char(ch)
        elif state == "value":
            self._value_char(ch)
        elif state == "after_value":
            if ch == ",":
                self.state = "key_wait"
            elif ch == "}":
                self._finish()
            elif ch not in WHITESPACE:
                self.failed = True

    def _value_char(self, ch: str) -> None:
        kind = self.value_kind
        if kind == "container":
            assert self.scanner is not None
            self.scanner.push(ch)
            self.value.append(ch)
            if self.streaming:
                assert self.index is not None
                self.emitter.arguments(self.index, ch)
            if self.scanner.done:
                self._end_value()
        elif kind == "string":
            self.value.append(ch)
            if self.value_escaped:
                self.value_escaped = False
            elif ch == "\\":
                self.value_escaped = True
            elif ch == '"':
                self._end_value()
        else:  # a number, true, false or null ends at the next delimiter
            if ch in WHITESPACE or ch in ",}":
                self._end_value()
                self.push(ch)
            else:
                self.value.append(ch)

    def _end_value(self) -> None:
        self.state = "after_value"
        raw = "".join(self.value)
        key = self.current_key
        if key in self.NAME_KEYS and self.name is None:
            try:
                name = json.loads(raw)
            except ValueError:
                name = None
            if not isinstance(name, str) or not name:
                self.failed = True
                return
            self.name = name
            if self.args_raw is not None:
                self._header()
                self.emitter.arguments(self.index, self.args_raw)  # type: ignore[arg-type]
        elif key in self.ARGUMENT_KEYS and self.args_raw is None:
            if self.value_kind == "string":
                try:
                    raw = json.loads(raw)
                except ValueError:
                    self.failed = True
                    return
            self.args_raw = raw
            if self.streaming:
                self.streaming = False
            elif self.name is not None:
                self._header()
                self.emitter.arguments(self.index, raw)  # type: ignore[arg-type]

    def _header(self) -> None:
        if self.index is None:
            assert self.name is not None
            self.index = self.emitter.header(self.name)

    def _finish(self) -> None:
        if self.name is None:
            self.failed = True
            return
        if self.args_raw is None:
            self._header()
            self.emitter.arguments(self.index, "{}")  # type: ignore[arg-type]
        self.done = True


class CallsReader:
    """One call object, or a JSON array of them."""

    def __init__(self, emitter: Emitter, *, allow_list: bool = True):
        self.emitter = emitter
        self.allow_list = allow_list
        self.state = "start"
        self.current: CallObjectReader | None = None
        self.failed = False
        self.done = False

    @property
    def emitted(self) -> bool:
        return self.emitter.count > 0

    def push(self, ch: str) -> None:
        state = self.state
        if state == "start":
            if ch in WHITESPACE:
                return
            if ch == "[" and self.allow_list:
                self.state = "item_wait"
            elif ch == "{":
                self._item(ch, "single")
            else:
                self.failed = True
        elif state in ("single", "item"):
            assert self.current is not None
            self.current.push(ch)
            if self.current.failed:
                self.failed = True
            elif self.current.done:
                if state == "single":
                    self.done = True
                else:
                    self.state = "after_item"
        elif state == "item_wait":
            if ch == "{":
                self._item(ch, "item")
            elif ch == "]":
                self.done = True
            elif ch not in WHITESPACE:
                self.failed = True
        elif state == "after_item":
            if ch == ",":
                self.state = "item_wait"
            elif ch == "]":
                self.done = True
            elif ch not in WHITESPACE:
                self.failed = True

    def _item(self, ch: str, state: str) -> None:
        self.current = CallObjectReader(self.emitter)
        self.current.push(ch)
        self.state = state


class ToolCallParser:
    """Base of the per-format parsers: ``feed`` text deltas, then ``flush`` once.

    Each returns a ``Parsed``.  ``tags`` are the special tokens of the format,
    which an engine must keep when it decodes token ids to text.
    """

    name = ""
    tags: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.emitter = Emitter()

    @property
    def called(self) -> bool:
        """Whether any tool call was emitted."""
        return self.emitter.count > 0

    def feed(self, text: str) -> Parsed:
        self._run(text, final=False)
        return self.emitter.take()

    def flush(self) -> Parsed:
        self._run("", final=True)
        return self.emitter.take()

    def content(self, text: str) -> None:
        self.emitter.out.content += text

    def _run(self, text: str, final: bool) -> None:
        raise NotImplementedError
