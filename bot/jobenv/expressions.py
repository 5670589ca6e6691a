"""GitHub Actions expressions: the side-effect-free subset Shepherd evaluates (pure, no I/O).

A workflow's ``${{ … }}`` expressions come from the repository, so they are hostile input. They
are tokenised and parsed by the small recursive-descent parser below (bounded length, token count
and nesting) and evaluated over plain data; nothing is ever handed to ``eval`` or a shell.

What is supported, with GitHub's semantics
(https://docs.github.com/en/actions/reference/workflows-and-actions/expressions):

- literals: ``'strings'`` (``''`` escapes a quote), numbers, ``true``, ``false``, ``null``;
- property access ``a.b``, ``a['b']``, ``a[0]`` (names are case-insensitive, as in GitHub);
- operators ``!``, ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``, ``&&``, ``||`` and parentheses, with
  GitHub's loose typing: strings compare case-insensitively, mixed types compare as numbers,
  ``a && b`` / ``a || b`` return one of their operands;
- the status functions ``success()``, ``always()``, ``failure()``, ``cancelled()`` — only in an
  ``if:`` of a step *before* the failing one, where every earlier step succeeded (true, true,
  false, false);
- ``contains``, ``startsWith``, ``endsWith``, ``format``, ``join``, ``fromJSON``.

Anything else — an unknown function (``hashFiles``, ``toJSON``), the ``.*`` object filter, a
property of an *open* context that is not known (``steps.build.outputs.x``, ``env.SET_BY_A_STEP``)
— raises ``Unresolvable`` with the reason, and the caller decides what that means (a step is
skipped, a value left unset). ``secrets.*`` (and anything else modelled as a ``Secret``) evaluate
to ``""``; every such name is reported in the result, so the summary can say it was empty.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

__all__ = [
    "Context",
    "Evaluation",
    "Hole",
    "Rendered",
    "Secret",
    "Unresolvable",
    "Value",
    "condition",
    "evaluate",
    "render",
    "render_parts",
    "split_template",
    "to_string",
    "truthy",
]

#: Bounds: an expression longer or deeper than this is not evaluated (GitHub's own limits on a
#: workflow are far larger than anything a real expression needs).
MAX_EXPRESSION_CHARS = 4096
MAX_TOKENS = 512
MAX_DEPTH = 32
#: Largest string an evaluation may build (``format`` and ``join`` can grow their input).
MAX_STRING_CHARS = 65536
#: Most ``${{ }}`` in one string.
MAX_EXPRESSIONS_PER_TEMPLATE = 256


class Unresolvable(Exception):
    """An expression Shepherd cannot evaluate here.

    Internal to ``bot.jobenv``: ``bot.jobenv.workflow`` turns it into a skip reason or a note, so
    it never escapes the package.
    """

    def __init__(self, reason: str, expression: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.expression = expression

    def __str__(self) -> str:
        if self.expression:
            return f"${{{{ {self.expression} }}}}: {self.reason}"
        return self.reason


@dataclass(frozen=True)
class Secret:
    """A value Shepherd never has (``secrets.X``, ``github.token``): ``""``, and its name recorded."""

    name: str


@dataclass(frozen=True)
class Context:
    """A named context (``matrix``, ``env``, ``github``…) or an object inside one.

    ``closed``: every property is known, so a missing one is null, as in GitHub (``matrix.nope``).
    Open: a missing property may exist when the job runs (an ``env`` var written to
    ``$GITHUB_ENV`` by an earlier step, a step output), so reading it is ``Unresolvable``.
    ``secret``: every property is a ``Secret`` named ``<name>.<property>`` (the ``secrets`` context).
    """

    name: str
    values: Mapping[str, Value] = field(default_factory=dict)
    closed: bool = False
    secret: bool = False


#: What an expression sees and yields: JSON-like data (numbers are floats, as in GitHub), plus
#: contexts and secrets.
Value: TypeAlias = bool | float | str | Context | Secret | list["Value"] | dict[str, "Value"] | None


@dataclass(frozen=True)
class Evaluation:
    value: Value
    #: Names of the secrets the expression read (each evaluated to ``""``), e.g. ``secrets.NPM_TOKEN``.
    secrets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Hole:
    """A ``${{ }}`` of a template that could not be evaluated."""

    expression: str
    reason: str


@dataclass(frozen=True)
class Rendered:
    text: str
    secrets: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------------------------
# Conversions (GitHub's: https://docs.github.com/en/actions/reference/workflows-and-actions/expressions#operators)

_JSON_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _number_text(number: float) -> str:
    """GitHub prints numbers like .NET's ``G15``: ``3.10`` in YAML is the number 3.1, shown ``3.1``."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return format(number, ".15G")


def to_string(value: Value) -> str:
    """A value as GitHub writes it into a string: null is ``""``, booleans ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | int):
        return _number_text(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, Secret):
        return ""
    # GitHub writes ``Object``/``Array`` here; no command means that, so Shepherd does not guess.
    raise Unresolvable("an object or array is not a string")


def _to_number(value: Value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float | int):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        if text[:2].lower() == "0x" and re.fullmatch(r"0[xX][0-9a-fA-F]{1,16}", text):
            return float(int(text, 16))
        if text[:2].lower() == "0o" and re.fullmatch(r"0[oO][0-7]{1,22}", text):
            return float(int(text, 8))
        if len(text) <= 64 and _JSON_NUMBER.fullmatch(text):
            return float(text)
    return math.nan


def truthy(value: Value) -> bool:
    """GitHub's truthiness: false, 0, NaN, ``""`` and null are falsy; objects are truthy."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, float | int):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def _kind(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float | int):
        return "number"
    if isinstance(value, str | Secret):
        return "string"
    return "object"


def _equal(left: Value, right: Value) -> bool:
    kind = _kind(left)
    if kind != _kind(right):
        return _to_number(left) == _to_number(right)
    if kind == "string":
        return to_string(left).casefold() == to_string(right).casefold()
    if kind == "object":
        return left is right
    return left == right


def _compare(op: str, left: Value, right: Value) -> bool:
    if _kind(left) == _kind(right) == "string":
        return _ordered(op, to_string(left).casefold(), to_string(right).casefold())
    a, b = _to_number(left), _to_number(right)
    return not (math.isnan(a) or math.isnan(b)) and _ordered(op, a, b)


_Ordered = TypeVar("_Ordered", str, float)


def _ordered(op: str, a: _Ordered, b: _Ordered) -> bool:
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def from_data(data: object, budget: list[int] | None = None, depth: int = 0) -> Value:
    """Plain YAML/JSON data as a ``Value`` (ints become floats; non-string keys are dropped).

    ``budget`` (a one-element list) bounds the nodes visited: YAML aliases can make a small
    document a very wide tree. Nesting is bounded too, so code walking a ``Value`` recursively
    cannot exhaust the stack.
    """
    budget = budget if budget is not None else [100_000]
    budget[0] -= 1
    if budget[0] < 0:
        raise Unresolvable("value too large")
    if depth > MAX_DEPTH:
        raise Unresolvable("value nested too deeply")
    if data is None or isinstance(data, bool | str):
        return data
    if isinstance(data, int | float):
        return float(data)
    if isinstance(data, list):
        return [from_data(item, budget, depth + 1) for item in data]
    if isinstance(data, dict):
        return {k: from_data(v, budget, depth + 1) for k, v in data.items() if isinstance(k, str)}
    raise Unresolvable(f"unsupported value of type {type(data).__name__}")


# ---------------------------------------------------------------------------------------------
# Tokens and syntax

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*')
       |(?P<num>0[xX][0-9a-fA-F]+|0[oO][0-7]+|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
       |(?P<id>[A-Za-z_][A-Za-z0-9_-]*)
       |(?P<op>==|!=|<=|>=|&&|\|\||[()\[\].,!<>*])
    )""",
    re.X,
)

#: The contexts a workflow may name; any other bare name is a syntax error in GitHub too.
CONTEXT_NAMES = frozenset(
    {
        "github",
        "env",
        "vars",
        "job",
        "jobs",
        "steps",
        "runner",
        "secrets",
        "strategy",
        "matrix",
        "needs",
        "inputs",
    }
)
_STATUS_FUNCTIONS = {"success": True, "always": True, "failure": False, "cancelled": False}


@dataclass(frozen=True)
class _Token:
    kind: str  # "str", "num", "id", "op", "end"
    text: str


def _tokens(expression: str) -> list[_Token]:
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise Unresolvable("expression too long")
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expression):
        if expression[pos:].isspace():
            break
        m = _TOKEN.match(expression, pos)
        if m is None or m.lastgroup is None:
            raise Unresolvable(f"unsupported syntax at {expression[pos:].strip()[:20]!r}")
        tokens.append(_Token(m.lastgroup, m.group(m.lastgroup)))
        if len(tokens) > MAX_TOKENS:
            raise Unresolvable("expression too long")
        pos = m.end()
    tokens.append(_Token("end", ""))
    return tokens


@dataclass(frozen=True)
class _Literal:
    value: Value


@dataclass(frozen=True)
class _Name:
    name: str


@dataclass(frozen=True)
class _Member:
    base: _Node
    key: _Node  # a _Literal key for ``a.b`` and ``a['b']``


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _Binary:
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Node, ...]


_Node: TypeAlias = _Literal | _Name | _Member | _Not | _Binary | _Call


class _Parser:
    """Recursive descent over GitHub's precedence: ``||`` < ``&&`` < ``== !=`` < ``< <= > >=`` < ``!``."""

    def __init__(self, expression: str) -> None:
        self.tokens = _tokens(expression)
        self.pos = 0
        self.depth = 0

    def parse(self) -> _Node:
        node = self._or()
        if self._peek().kind != "end":
            raise Unresolvable(f"unexpected {self._peek().text!r}")
        return node

    def _peek(self) -> _Token:
        return self.tokens[self.pos]

    def _take(self, text: str | None = None) -> _Token:
        token = self.tokens[self.pos]
        if text is not None and (token.kind != "op" or token.text != text):
            raise Unresolvable(f"expected {text!r}, found {token.text or 'the end'!r}")
        if token.kind != "end":
            self.pos += 1
        return token

    def _at(self, *ops: str) -> bool:
        token = self._peek()
        return token.kind == "op" and token.text in ops

    def _nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unresolvable("expression nested too deeply")

    def _or(self) -> _Node:
        node = self._and()
        while self._at("||"):
            self._take()
            node = _Binary("||", node, self._and())
        return node

    def _and(self) -> _Node:
        node = self._equality()
        while self._at("&&"):
            self._take()
            node = _Binary("&&", node, self._equality())
        return node

    def _equality(self) -> _Node:
        node = self._comparison()
        while self._at("==", "!="):
            op = self._take().text
            node = _Binary(op, node, self._comparison())
        return node

    def _comparison(self) -> _Node:
        node = self._unary()
        while self._at("<", "<=", ">", ">="):
            op = self._take().text
            node = _Binary(op, node, self._unary())
        return node

    def _unary(self) -> _Node:
        if self._at("!"):
            self._take()
            self._nested()
            node = _Not(self._unary())
            self.depth -= 1
            return node
        return self._postfix()

    def _postfix(self) -> _Node:
        node = self._primary()
        while self._at(".", "["):
            if self._take().text == ".":
                token = self._take()
                if token.kind == "op" and token.text == "*":
                    raise Unresolvable("the .* object filter is not supported")
                if token.kind != "id":
                    raise Unresolvable(f"expected a property name, found {token.text!r}")
                node = _Member(node, _Literal(token.text))
            else:
                if self._at("*"):
                    raise Unresolvable("the [*] object filter is not supported")
                self._nested()
                key = self._or()
                self.depth -= 1
                self._take("]")
                node = _Member(node, key)
        return node

    def _primary(self) -> _Node:
        token = self._take()
        if token.kind == "str":
            return _Literal(token.text[1:-1].replace("''", "'"))
        if token.kind == "num":
            return _Literal(_to_number(token.text))
        if token.kind == "op" and token.text == "(":
            self._nested()
            node = self._or()
            self.depth -= 1
            self._take(")")
            return node
        if token.kind == "id":
            word = token.text.lower()
            if self._at("("):
                return self._call(token.text)
            if word in ("true", "false"):
                return _Literal(word == "true")
            if word == "null":
                return _Literal(None)
            if word in CONTEXT_NAMES:
                return _Name(word)
            raise Unresolvable(f"unknown name {token.text!r}")
        raise Unresolvable(f"unexpected {token.text or 'end of expression'!r}")

    def _call(self, name: str) -> _Node:
        self._take("(")
        self._nested()
        args: list[_Node] = []
        if not self._at(")"):
            args.append(self._or())
            while self._at(","):
                self._take()
                args.append(self._or())
        self._take(")")
        self.depth -= 1
        return _Call(name, tuple(args))


def _describe(node: _Node) -> str:
    """``steps.build.outputs.dir`` for messages."""
    if isinstance(node, _Name):
        return node.name
    if isinstance(node, _Member):
        base = _describe(node.base)
        if isinstance(node.key, _Literal) and isinstance(node.key.value, str):
            key = node.key.value
            return f"{base}.{key}" if re.fullmatch(r"[A-Za-z_][\w-]*", key) else f"{base}[{key!r}]"
        return f"{base}[…]"
    if isinstance(node, _Call):
        return f"{node.name}()"
    return "…"


# ---------------------------------------------------------------------------------------------
# Evaluation


class _Evaluator:
    def __init__(self, contexts: Mapping[str, Context], conditions: bool) -> None:
        self.contexts = contexts
        self.conditions = conditions
        self.secrets: set[str] = set()

    def run(self, node: _Node) -> Value:
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Name):
            context = self.contexts.get(node.name)
            if context is None:
                raise Unresolvable(f"the {node.name} context is not available here")
            return context
        if isinstance(node, _Member):
            return self._member(node)
        if isinstance(node, _Not):
            return not truthy(self.run(node.operand))
        if isinstance(node, _Binary):
            left = self.run(node.left)
            # ``&&``/``||`` short-circuit: ``always() || steps.x.outcome == 'success'`` is decided
            # without the unknown right side.
            if node.op == "&&":
                return self.run(node.right) if truthy(left) else left
            if node.op == "||":
                return left if truthy(left) else self.run(node.right)
            right = self.run(node.right)
            if node.op == "==":
                return _equal(left, right)
            if node.op == "!=":
                return not _equal(left, right)
            return _compare(node.op, left, right)
        return self._call(node)

    def _member(self, node: _Member) -> Value:
        base = self.run(node.base)
        key_value = self.run(node.key)
        if isinstance(base, list):
            if isinstance(key_value, float) and key_value.is_integer() and key_value >= 0:
                index = int(key_value)
                return base[index] if index < len(base) else None
            return None
        if not isinstance(base, dict | Context):
            return None  # a property of null (or of a string) is null in GitHub
        key = to_string(key_value)
        if isinstance(base, Context) and base.secret:
            self.secrets.add(f"{base.name}.{key}")
            return ""
        values = base.values if isinstance(base, Context) else base
        found = values.get(key)
        if found is None and key not in values:
            folded = key.casefold()
            match = next((k for k in values if k.casefold() == folded), None)
            if match is None:
                if isinstance(base, Context) and not base.closed:
                    raise Unresolvable(f"{_describe(node)} is not known here")
                return None
            found = values[match]
        if isinstance(found, Secret):
            self.secrets.add(found.name)
            return ""
        return found

    def _call(self, node: _Call) -> Value:
        name = node.name.lower()
        if name in _STATUS_FUNCTIONS:
            if not self.conditions or node.args:
                raise Unresolvable(f"{node.name}() is only meaningful in a step's if:")
            return _STATUS_FUNCTIONS[name]
        args = [self.run(arg) for arg in node.args]
        if name == "contains" and len(args) == 2:
            if isinstance(args[0], list):
                return any(_equal(item, args[1]) for item in args[0])
            return to_string(args[1]).casefold() in to_string(args[0]).casefold()
        if name == "startswith" and len(args) == 2:
            return to_string(args[0]).casefold().startswith(to_string(args[1]).casefold())
        if name == "endswith" and len(args) == 2:
            return to_string(args[0]).casefold().endswith(to_string(args[1]).casefold())
        if name == "format" and args:
            return _format(to_string(args[0]), [to_string(a) for a in args[1:]])
        if name == "join" and len(args) in (1, 2):
            separator = to_string(args[1]) if len(args) == 2 else ","
            if not isinstance(args[0], list):
                return to_string(args[0])
            return _bounded(separator.join(to_string(item) for item in args[0]))
        if name == "fromjson" and len(args) == 1:
            text = to_string(args[0])
            if len(text) > MAX_STRING_CHARS:
                raise Unresolvable("fromJSON() input too large")
            try:
                return from_data(json.loads(text))
            except (ValueError, RecursionError) as exc:
                raise Unresolvable("fromJSON() of invalid JSON") from exc
        if name == "hashfiles":
            raise Unresolvable("hashFiles() reads the checked-out tree")
        raise Unresolvable(f"{node.name}() is not supported here")


def _bounded(text: str) -> str:
    if len(text) > MAX_STRING_CHARS:
        raise Unresolvable("result too long")
    return text


def _format(template: str, args: list[str]) -> str:
    """``format('{0} {{x}}', a)``: ``{N}`` is an argument, ``{{``/``}}`` are literal braces."""
    out: list[str] = []
    size = 0
    for m in re.finditer(r"\{\{|\}\}|\{(\d{1,3})\}|[{}]|[^{}]+", template):
        piece = m.group(0)
        if piece in ("{{", "}}"):
            piece = piece[0]
        elif m.group(1) is not None:
            index = int(m.group(1))
            if index >= len(args):
                raise Unresolvable("format() refers to a missing argument")
            piece = args[index]
        elif piece in ("{", "}"):
            raise Unresolvable("format() with an unbalanced brace")
        size += len(piece)
        if size > MAX_STRING_CHARS:
            raise Unresolvable("result too long")
        out.append(piece)
    return "".join(out)


def evaluate(
    expression: str, contexts: Mapping[str, Context], *, conditions: bool = False
) -> Evaluation:
    """The value of one expression (the text inside ``${{ }}``).

    ``conditions``: the status functions are available (a step's ``if:`` before the failing step).
    Raises ``Unresolvable``.
    """
    try:
        evaluator = _Evaluator(contexts, conditions)
        value = evaluator.run(_Parser(expression).parse())
    except Unresolvable as exc:
        exc.expression = exc.expression or expression.strip()
        raise
    except RecursionError as exc:  # bounded by MAX_DEPTH; kept as a last line of defence
        raise Unresolvable("expression nested too deeply", expression.strip()) from exc
    return Evaluation(value, frozenset(evaluator.secrets))


# ---------------------------------------------------------------------------------------------
# Templates: strings with ${{ }} inside


def split_template(text: str) -> list[str | Hole]:
    """``'a ${{ b }} c'`` → ``['a ', Hole('b', ''), ' c']`` (a Hole per expression, unevaluated).

    An expression ends at the first ``}}`` outside a string literal. Raises ``Unresolvable`` for
    an unterminated ``${{`` or too many expressions.
    """
    parts: list[str | Hole] = []
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            if pos < len(text) or not parts:
                parts.append(text[pos:])
            return parts
        if start > pos:
            parts.append(text[pos:start])
        i = start + 3
        in_string = False
        while i < len(text):
            if text[i] == "'":
                in_string = not in_string
            elif not in_string and text.startswith("}}", i):
                break
            i += 1
        else:
            raise Unresolvable("unterminated ${{", text[start + 3 : start + 43].strip())
        parts.append(Hole(text[start + 3 : i].strip(), ""))
        if len(parts) > 2 * MAX_EXPRESSIONS_PER_TEMPLATE:
            raise Unresolvable("too many expressions in one value")
        pos = i + 2


def render_parts(
    text: str, contexts: Mapping[str, Context]
) -> tuple[list[str | Hole], frozenset[str]]:
    """Evaluate every expression of a template; those that cannot be evaluated stay ``Hole``s.

    Returns the parts and the secrets read. Raises ``Unresolvable`` only for a malformed template.
    """
    parts: list[str | Hole] = []
    secrets: set[str] = set()
    size = 0
    for piece in split_template(text):
        part: str | Hole = piece
        if isinstance(piece, Hole):
            try:
                result = evaluate(piece.expression, contexts)
                part = to_string(result.value)
                secrets |= result.secrets
            except Unresolvable as exc:
                part = Hole(piece.expression, exc.reason)
        size += len(part) if isinstance(part, str) else 0
        if size > MAX_STRING_CHARS + len(text):
            raise Unresolvable("value too long after evaluation")
        parts.append(part)
    return parts, frozenset(secrets)


def render(text: str, contexts: Mapping[str, Context]) -> Rendered:
    """A template with every expression evaluated; raises ``Unresolvable`` for the first that is not."""
    if "${{" not in text:
        return Rendered(text)
    parts, secrets = render_parts(text, contexts)
    for part in parts:
        if isinstance(part, Hole):
            raise Unresolvable(part.reason, part.expression)
    return Rendered("".join(p for p in parts if isinstance(p, str)), secrets)


def condition(text: str, contexts: Mapping[str, Context]) -> Evaluation:
    """A step's ``if:`` (with or without ``${{ }}``) as a boolean ``Evaluation``.

    GitHub adds an implicit ``success() &&`` when no status function is used; for the steps this
    is asked about (before the failing one) ``success()`` is true, so it changes nothing. A value
    that mixes ``${{ }}`` with literal text is a string, and truthy unless empty (GitHub's rule).
    """
    stripped = text.strip()
    parts = split_template(stripped)
    only = parts[0] if len(parts) == 1 else None
    if isinstance(only, Hole):
        expression = only.expression
    elif any(isinstance(p, Hole) for p in parts):
        rendered = render(stripped, contexts)
        return Evaluation(rendered.text != "", rendered.secrets)
    else:
        expression = stripped
    result = evaluate(expression, contexts, conditions=True)
    return Evaluation(truthy(result.value), result.secrets)
