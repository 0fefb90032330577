"""A small reader of Caffe's protobuf text format (``.prototxt``), for the config tests.

Enough of the text format for the authors' released DeepLab configs: ``name: value`` fields,
nested ``name { ... }`` messages, quoted strings, numbers, enum words, ``#`` comments and the
``${VAR}`` placeholders that their run script fills in (substituted from ``variables``,
else kept as text). Every message becomes a :class:`Message`: field name -> list of values,
since any field may repeat.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Union

Value = Union[str, int, float, "Message"]

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*                     # blanks and comments (skipped)
    |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<punct>[{}:;,])
    |(?P<word>(?:\$\{\w+\}|[^\s{}:;,"'\#$])+)""",
    re.VERBOSE,
)


class Message(dict[str, list[Value]]):
    """One message: field -> values in file order."""

    def one(self, name: str, default: Value | None = None) -> Value:
        """The single value of ``name``; ``default`` when absent; error when repeated."""
        values = self.get(name, [])
        if not values:
            if default is None:
                raise KeyError(f"field {name!r} absent (fields: {', '.join(self)})")
            return default
        if len(values) > 1:
            raise ValueError(f"field {name!r} repeats {len(values)} times")
        return values[0]

    def sub(self, name: str) -> Message:
        """The nested message ``name`` (an empty one when absent)."""
        value = self.one(name, Message())
        if not isinstance(value, Message):
            raise TypeError(f"field {name!r} is a scalar, not a message")
        return value

    def all(self, name: str) -> list[Value]:
        return list(self.get(name, []))


def _scalar(text: str, variables: Mapping[str, str]) -> str | int | float:
    quoted = text[0] in "\"'"
    if quoted:
        text = bytes(text[1:-1], "utf-8").decode("unicode_escape")
    text = re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), text)
    if quoted:
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text  # an enum word (MAX, CONVOLUTION, ...) or an unfilled placeholder


def _tokens(text: str, source: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"{source}:{line}: cannot read {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.lastgroup is not None:
            yield m.lastgroup, m.group(m.lastgroup)


def parse_prototxt(
    text: str, variables: Mapping[str, str] | None = None, source: str = "<text>"
) -> Message:
    """Parse protobuf text format into nested :class:`Message` dicts."""
    variables = variables or {}
    stack = [Message()]
    tokens = list(_tokens(text, source))
    i = 0
    while i < len(tokens):
        kind, tok = tokens[i]
        if kind == "punct" and tok in ";,":
            i += 1
            continue
        if kind == "punct" and tok == "}":
            if len(stack) == 1:
                raise ValueError(f"{source}: unbalanced '}}'")
            stack.pop()
            i += 1
            continue
        if kind != "word":
            raise ValueError(f"{source}: expected a field name, got {tok!r}")
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if nxt == ("punct", ":") and i + 2 < len(tokens) and tokens[i + 2] != ("punct", "{"):
            value_kind, value = tokens[i + 2]
            if value_kind == "punct":
                raise ValueError(f"{source}: field {tok!r} has no value")
            stack[-1].setdefault(tok, []).append(_scalar(value, variables))
            i += 3
            continue
        j = i + 2 if nxt == ("punct", ":") else i + 1
        if j >= len(tokens) or tokens[j] != ("punct", "{"):
            raise ValueError(f"{source}: field {tok!r} has no value")
        child = Message()
        stack[-1].setdefault(tok, []).append(child)
        stack.append(child)
        i = j + 1
    if len(stack) != 1:
        raise ValueError(f"{source}: {len(stack) - 1} unclosed message(s)")
    return stack[0]


def read_prototxt(path: str | Path, variables: Mapping[str, str] | None = None) -> Message:
    return parse_prototxt(Path(path).read_text(), variables, source=str(path))


def net_layers(net: Message) -> list[Message]:
    """The layers of a NetParameter, old (``layers``) or new (``layer``) style."""
    return [layer for layer in net.all("layers") + net.all("layer") if isinstance(layer, Message)]
