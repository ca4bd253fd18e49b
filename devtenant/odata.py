"""A small OData v4 query-option parser shared by the emulated Dataverse and Graph endpoints.

It covers what the two services accept from this product and a little more, so that a client bug shows
up as the same 400 the real service would give rather than as a silent match:
comparisons (eq ne gt ge lt le), and / or / not, parentheses, null / true / false, numbers, quoted
strings with '' escapes, unquoted date-time and GUID literals, property paths with '/',
lambda `path/any(x: ...)`, functions (contains, startswith, endswith, tolower) and Dataverse query
functions called with named parameters (`Microsoft.Dynamics.CRM.In(PropertyName='x',PropertyValues=[...])`).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class ODataSyntaxError(ValueError):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)(?![\w-])
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![\w.])
    | (?P<name>[A-Za-z_$][\w.$]*(?:/[A-Za-z_$][\w.$]*)*)
    | (?P<punct>[(),:\[\]=/])
    )""",
    re.VERBOSE,
)


@dataclass
class Token:
    kind: str
    value: Any


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ODataSyntaxError(f"Syntax error at position {pos} in '{text}'.")
        kind = m.lastgroup
        raw = m.group(kind)
        if kind == "string":
            tokens.append(Token("literal", raw[1:-1].replace("''", "'")))
        elif kind == "datetime":
            tokens.append(Token("literal", parse_datetime(raw) if "T" in raw else raw))
        elif kind == "guid":
            tokens.append(Token("literal", raw.lower()))
        elif kind == "number":
            tokens.append(Token("literal", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif kind == "name":
            lowered = raw.lower()
            if lowered in ("null",):
                tokens.append(Token("literal", None))
            elif lowered in ("true", "false"):
                tokens.append(Token("literal", lowered == "true"))
            elif lowered in ("eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not"):
                tokens.append(Token("op", lowered))
            else:
                tokens.append(Token("name", raw))
        else:
            tokens.append(Token("punct", raw))
        pos = m.end()
    return tokens


def parse_datetime(value: str) -> datetime:
    text = value.replace("Z", "+00:00")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", text):
        text += ":00+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


# ---- AST -------------------------------------------------------------------------------------

@dataclass
class Literal:
    value: Any


@dataclass
class Path:
    parts: list[str]


@dataclass
class Compare:
    op: str
    left: Any
    right: Any


@dataclass
class BoolOp:
    op: str
    items: list[Any]


@dataclass
class Not:
    item: Any


@dataclass
class Call:
    name: str
    args: list[Any] = field(default_factory=list)
    named: dict[str, Any] = field(default_factory=dict)


@dataclass
class ListLiteral:
    items: list[Any]


@dataclass
class Lambda:
    collection: Path
    kind: str  # any | all
    variable: str
    body: Any


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise ODataSyntaxError(f"Unexpected end of expression in '{self.text}'.")
        self.i += 1
        return tok

    def expect(self, kind: str, value: Any = None) -> Token:
        tok = self.take()
        if tok.kind != kind or (value is not None and tok.value != value):
            raise ODataSyntaxError(f"Expected {value or kind} but found '{tok.value}' in '{self.text}'.")
        return tok

    def parse(self) -> Any:
        node = self.or_expr()
        if self.peek() is not None:
            raise ODataSyntaxError(f"Unexpected '{self.peek().value}' in '{self.text}'.")
        return node

    def or_expr(self) -> Any:
        items = [self.and_expr()]
        while self._at("op", "or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", items)

    def and_expr(self) -> Any:
        items = [self.unary()]
        while self._at("op", "and"):
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else BoolOp("and", items)

    def unary(self) -> Any:
        if self._at("op", "not"):
            self.take()
            return Not(self.unary())
        return self.comparison()

    def comparison(self) -> Any:
        left = self.primary()
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.value in ("eq", "ne", "gt", "ge", "lt", "le"):
            self.take()
            return Compare(tok.value, left, self.primary())
        return left

    def primary(self) -> Any:
        tok = self.take()
        if tok.kind == "punct" and tok.value == "(":
            node = self.or_expr()
            self.expect("punct", ")")
            return node
        if tok.kind == "punct" and tok.value == "[":
            items = []
            while not self._at("punct", "]"):
                items.append(self.primary())
                if self._at("punct", ","):
                    self.take()
            self.take()
            return ListLiteral(items)
        if tok.kind == "literal":
            return Literal(tok.value)
        if tok.kind == "name":
            if self._at("punct", "("):
                return self.call_or_lambda(tok.value)
            return Path(tok.value.split("/"))
        raise ODataSyntaxError(f"Unexpected '{tok.value}' in '{self.text}'.")

    def call_or_lambda(self, name: str) -> Any:
        self.expect("punct", "(")
        parts = name.split("/")
        if len(parts) > 1 and parts[-1].lower() in ("any", "all"):
            variable = self.expect("name").value
            self.expect("punct", ":")
            body = self.or_expr()
            self.expect("punct", ")")
            return Lambda(Path(parts[:-1]), parts[-1].lower(), variable, body)
        call = Call(name)
        while not self._at("punct", ")"):
            tok = self.peek()
            nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
            if tok.kind == "name" and nxt is not None and nxt.kind == "punct" and nxt.value == "=":
                self.take()
                self.take()
                call.named[tok.value] = self.primary()
            else:
                call.args.append(self.or_expr())
            if self._at("punct", ","):
                self.take()
        self.take()
        return call

    def _at(self, kind: str, value: Any) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == kind and tok.value == value


def parse_filter(text: str) -> Any:
    return _Parser(text).parse()


# ---- evaluation --------------------------------------------------------------------------------

Resolver = Callable[[list[str]], Any]


DATETIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})?")
GUID_TEXT = re.compile(r"[0-9a-fA-F-]{36}")


def _norm(value: Any) -> Any:
    return _norm_text(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=65_536)
def _norm_text(value: str) -> Any:
    """Cached: a filter's literals are normalised again for every row it is matched against (an `or` of 50 ids, for
    every candidate row); the result depends on the text alone and is immutable."""
    if DATETIME_TEXT.fullmatch(value):
        try:
            return parse_datetime(value)
        except ValueError:
            return value
    return value.lower() if GUID_TEXT.fullmatch(value) else value


def _compare(op: str, left: Any, right: Any) -> bool:
    left, right = _norm(left), _norm(right)
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if left is None or right is None:
        return False
    try:
        if op == "gt":
            return left > right
        if op == "ge":
            return left >= right
        if op == "lt":
            return left < right
        if op == "le":
            return left <= right
    except TypeError as exc:
        raise ODataSyntaxError(f"Cannot compare {type(left).__name__} with {type(right).__name__}.") from exc
    raise ODataSyntaxError(f"Unknown comparison operator '{op}'.")


def evaluate(node: Any, resolve: Resolver, functions: dict[str, Callable[..., Any]] | None = None) -> Any:
    functions = functions or {}
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, ListLiteral):
        return [evaluate(i, resolve, functions) for i in node.items]
    if isinstance(node, Path):
        return resolve(node.parts)
    if isinstance(node, Compare):
        return _compare(node.op, evaluate(node.left, resolve, functions), evaluate(node.right, resolve, functions))
    if isinstance(node, BoolOp):
        results = (bool(evaluate(i, resolve, functions)) for i in node.items)
        return all(results) if node.op == "and" else any(results)
    if isinstance(node, Not):
        return not evaluate(node.item, resolve, functions)
    if isinstance(node, Lambda):
        items = resolve(node.collection.parts) or []

        def scoped(item: Any) -> Resolver:
            def inner(parts: list[str]) -> Any:
                if parts[0] == node.variable:
                    value = item
                    for p in parts[1:]:
                        value = value.get(p) if isinstance(value, dict) else None
                    return value
                return resolve(parts)
            return inner

        hits = (bool(evaluate(node.body, scoped(i), functions)) for i in items)
        return any(hits) if node.kind == "any" else all(hits)
    if isinstance(node, Call):
        fn = functions.get(node.name.lower())
        if fn is None:
            raise ODataSyntaxError(f"Unknown function '{node.name}'.")
        args = [evaluate(a, resolve, functions) for a in node.args]
        named = {k: (v if isinstance(v, Path) else evaluate(v, resolve, functions)) for k, v in node.named.items()}
        return fn(resolve, *args, **named)
    raise ODataSyntaxError(f"Cannot evaluate {node!r}.")


def compiled(node: Any, functions: dict[str, Callable[..., Any]] | None = None) -> Callable[[Resolver], Any]:
    """`evaluate` for one filter, worked out once: the function a query applies to each row (same answers, same
    errors), without walking the tree by type for every row. Comparisons and boolean operators, which a window's
    filter over every booking is made of, are compiled; any other node is evaluated as `evaluate` does."""
    if isinstance(node, Literal):
        value = node.value
        return lambda resolve: value
    if isinstance(node, Path):
        parts = node.parts
        return lambda resolve: resolve(parts)
    if isinstance(node, Compare):
        left, right, op = compiled(node.left, functions), compiled(node.right, functions), node.op
        return lambda resolve: _compare(op, left(resolve), right(resolve))
    if isinstance(node, BoolOp):
        items = [compiled(i, functions) for i in node.items]
        if node.op == "and":
            return lambda resolve: all(bool(item(resolve)) for item in items)
        return lambda resolve: any(bool(item(resolve)) for item in items)
    return lambda resolve: evaluate(node, resolve, functions)


def calls(node: Any) -> list[Call]:
    """Every function call in a filter, however deep (validation visits each, where evaluation may short-circuit)."""
    found: list[Call] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Call):
            found.append(current)
        if hasattr(current, "__dataclass_fields__"):
            for name in current.__dataclass_fields__:
                value = getattr(current, name)
                stack.extend(value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value])
    return found


def referenced_paths(node: Any) -> list[list[str]]:
    """Every property path a filter names (lambda variables excluded), for validation."""
    found: list[list[str]] = []

    def walk(n: Any, bound: set[str]) -> None:
        if isinstance(n, Path):
            if n.parts[0] not in bound:
                found.append(n.parts)
        elif isinstance(n, Compare):
            walk(n.left, bound)
            walk(n.right, bound)
        elif isinstance(n, BoolOp):
            for i in n.items:
                walk(i, bound)
        elif isinstance(n, Not):
            walk(n.item, bound)
        elif isinstance(n, Lambda):
            found.append(n.collection.parts)
            walk(n.body, bound | {n.variable})
        elif isinstance(n, Call):
            for a in n.args:
                walk(a, bound)
        elif isinstance(n, ListLiteral):
            for i in n.items:
                walk(i, bound)

    walk(node, set())
    return found


BASIC_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": lambda _r, a, b: a is not None and b is not None and str(b).lower() in str(a).lower(),
    "startswith": lambda _r, a, b: a is not None and str(a).lower().startswith(str(b).lower()),
    "endswith": lambda _r, a, b: a is not None and str(a).lower().endswith(str(b).lower()),
    "tolower": lambda _r, a: None if a is None else str(a).lower(),
}


# ---- $select / $expand -----------------------------------------------------------------------------

@dataclass
class ExpandItem:
    name: str
    select: list[str] | None = None
    expand: list[ExpandItem] = field(default_factory=list)
    filter: str | None = None


def split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, quote, current = [], 0, False, []
    for ch in text:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0 or quote:
        raise ODataSyntaxError(f"Unbalanced parentheses or quotes in '{text}'.")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_select(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return split_top_level(text, ",")


def parse_expand(text: str | None) -> list[ExpandItem]:
    if not text:
        return []
    items = []
    for part in split_top_level(text, ","):
        m = re.fullmatch(r"([\w.]+)\s*(?:\((.*)\))?", part, re.S)
        if not m:
            raise ODataSyntaxError(f"Syntax error in $expand '{part}'.")
        item = ExpandItem(m.group(1))
        for option in split_top_level(m.group(2) or "", ";"):
            key, _, value = option.partition("=")
            key = key.strip().lower()
            if key == "$select":
                item.select = parse_select(value)
            elif key == "$expand":
                item.expand = parse_expand(value)
            elif key == "$filter":
                item.filter = value
            else:
                raise ODataSyntaxError(f"The query option '{key}' is not supported inside $expand.")
        items.append(item)
    return items
