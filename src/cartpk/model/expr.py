"""The safe expression language of model files.

An expression is parsed with ``ast.parse(mode="eval")`` and walked against a whitelist:
numbers, names, ``+ - * / **``, unary ``-``/``+``, comparisons (chained allowed), ``and``,
``or``, ``not``, ``a if cond else b`` and calls to ``exp log log10 sqrt abs min max``.
Everything else (attributes, subscripts, strings, lambdas, comprehensions, keyword or
starred arguments, calls to any other name, names with a leading underscore) is refused
with a :class:`~cartpk.errors.ModelError` that names the place and what was refused.

The walk also checks kinds: arithmetic and function arguments take numbers, ``and``/``or``
/``not`` and the condition of ``a if c else b`` take truth values (comparisons), and a
whole expression must be a number. Code is emitted from a *rebuilt* tree made only of the
node types above, with every number a float and every name renamed, so the generated text
cannot contain anything the whitelist did not admit.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ModelError

#: Callable names: emitted name, minimum and maximum number of arguments (None: any).
FUNCTIONS: dict[str, tuple[str, int, int | None]] = {
    "exp": ("math.exp", 1, 1),
    "log": ("math.log", 1, 1),
    "log10": ("math.log10", 1, 1),
    "sqrt": ("math.sqrt", 1, 1),
    "abs": ("abs", 1, 1),
    "min": ("min", 2, None),
    "max": ("max", 2, None),
}

MAX_LENGTH = 10_000
MAX_DEPTH = 100

BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
COMPARE = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)

REFUSED = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambda functions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Starred: "starred arguments",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}

NUMBER = "number"
TRUTH = "truth value"


@dataclass(frozen=True)
class Expression:
    """A validated expression: its text, the rebuilt tree and the names it uses."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    def emit(self, rename: Mapping[str, str]) -> str:
        """Python source for this expression, each name replaced by ``rename[name]``."""
        return ast.unparse(_Renamer(rename).visit(copy.deepcopy(self.tree)))


def parse_expression(text: object, where: str) -> Expression:
    """Parse and validate one expression; ``where`` (file, section and key) prefixes errors.

    Numbers (int or float in the TOML file) are accepted as constant expressions.
    Names are only collected here: the caller checks them against its scope.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ModelError(f"{where}: expected an expression string, got {text!r}")
    source = text if isinstance(text, str) else repr(float(text))
    if not source.strip():
        raise ModelError(f"{where}: the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ModelError(f"{where}: the expression is longer than {MAX_LENGTH} characters")
    walker = _Validator(source.strip(), where)
    try:
        tree, kind = walker.check(ast.parse(source.strip(), mode="eval").body)
    except ModelError:
        raise
    except SyntaxError as err:
        raise ModelError(
            f"{where}: syntax error in {_shorten(source)} at column {err.offset}: {err.msg}"
        ) from None
    except (RecursionError, MemoryError):
        raise ModelError(f"{where}: nested too deeply to parse") from None
    except (ValueError, OverflowError) as err:
        raise ModelError(f"{where}: cannot read {_shorten(source)}: {err}") from None
    if kind != NUMBER:
        raise ModelError(
            f"{where}: {_shorten(source)} is a {TRUTH} (comparison), but a number is needed; "
            "write 'a if condition else b'"
        )
    return Expression(source, tree, frozenset(walker.names))


class _Validator:
    """Walk a parsed tree, refuse anything off the whitelist, rebuild what is allowed."""

    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where
        self.names: set[str] = set()
        self.depth = 0

    def fail(self, node: ast.AST, what: str) -> ModelError:
        segment = ast.get_source_segment(self.source, node) or ast.dump(node)
        return ModelError(f"{self.where}: {what} not allowed (in {_shorten(segment)})")

    def check(self, node: ast.expr) -> tuple[ast.expr, str]:
        """Return the rebuilt node and its kind (NUMBER or TRUTH)."""
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.fail(node, REFUSED.get(type(node), f"'{type(node).__name__}'"))
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ModelError(f"{self.where}: nested more than {MAX_DEPTH} levels deep")
        result = method(node)
        self.depth -= 1
        return result

    def expect(self, node: ast.expr, kind: str, role: str) -> ast.expr:
        rebuilt, found = self.check(node)
        if found != kind:
            segment = ast.get_source_segment(self.source, node)
            raise ModelError(f"{self.where}: {role} must be a {kind}, but {segment!r} is a {found}")
        return rebuilt

    def visit_Constant(self, node: ast.Constant) -> tuple[ast.expr, str]:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "string literals" if isinstance(value, str | bytes) else f"constant {value!r}"
            raise self.fail(node, what)
        return ast.Constant(float(value)), NUMBER

    def visit_Name(self, node: ast.Name) -> tuple[ast.expr, str]:
        if node.id.startswith("_"):
            raise self.fail(node, f"the name {node.id!r} (leading underscore)")
        if node.id in FUNCTIONS:
            raise self.fail(node, f"using the function {node.id!r} without calling it")
        self.names.add(node.id)
        return ast.Name(node.id, ast.Load()), NUMBER

    def visit_BinOp(self, node: ast.BinOp) -> tuple[ast.expr, str]:
        if type(node.op) not in BINARY:
            raise self.fail(node, f"the operator {type(node.op).__name__}")
        left = self.expect(node.left, NUMBER, "an arithmetic operand")
        right = self.expect(node.right, NUMBER, "an arithmetic operand")
        return ast.BinOp(left, type(node.op)(), right), NUMBER

    def visit_UnaryOp(self, node: ast.UnaryOp) -> tuple[ast.expr, str]:
        if isinstance(node.op, ast.Not):
            operand = self.expect(node.operand, TRUTH, "the operand of 'not'")
            return ast.UnaryOp(ast.Not(), operand), TRUTH
        if isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.expect(node.operand, NUMBER, "a signed operand")
            return ast.UnaryOp(type(node.op)(), operand), NUMBER
        raise self.fail(node, f"the operator {type(node.op).__name__}")

    def visit_Compare(self, node: ast.Compare) -> tuple[ast.expr, str]:
        for op in node.ops:
            if not isinstance(op, COMPARE):
                raise self.fail(node, f"the comparison {type(op).__name__}")
        left = self.expect(node.left, NUMBER, "a compared value")
        rest = [self.expect(item, NUMBER, "a compared value") for item in node.comparators]
        return ast.Compare(left, [type(op)() for op in node.ops], rest), TRUTH

    def visit_BoolOp(self, node: ast.BoolOp) -> tuple[ast.expr, str]:
        word = "and" if isinstance(node.op, ast.And) else "or"
        values = [self.expect(item, TRUTH, f"an operand of '{word}'") for item in node.values]
        return ast.BoolOp(type(node.op)(), values), TRUTH

    def visit_IfExp(self, node: ast.IfExp) -> tuple[ast.expr, str]:
        test = self.expect(node.test, TRUTH, "the condition of 'a if condition else b'")
        body = self.expect(node.body, NUMBER, "each branch of 'a if condition else b'")
        orelse = self.expect(node.orelse, NUMBER, "each branch of 'a if condition else b'")
        return ast.IfExp(test, body, orelse), NUMBER

    def visit_Call(self, node: ast.Call) -> tuple[ast.expr, str]:
        if not isinstance(node.func, ast.Name):
            self.check(node.func)
            raise self.fail(node, "calling anything but a function name")
        name = node.func.id
        if name not in FUNCTIONS:
            allowed = ", ".join(FUNCTIONS)
            raise self.fail(node, f"calling {name!r} (callable: {allowed})")
        if node.keywords:
            raise self.fail(node, "keyword arguments")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.fail(node, "starred arguments")
        _, low, high = FUNCTIONS[name]
        if len(node.args) < low or (high is not None and len(node.args) > high):
            count = str(low) if high == low else f"at least {low}"
            raise ModelError(
                f"{self.where}: {name}() takes {count} argument(s), got {len(node.args)} "
                f"(in {_shorten(ast.get_source_segment(self.source, node) or '')})"
            )
        args = [self.expect(arg, NUMBER, f"an argument of {name}()") for arg in node.args]
        return ast.Call(ast.Name(name, ast.Load()), args, []), NUMBER


class _Renamer(ast.NodeTransformer):
    """Rename variables and map function names to their numba-compatible spelling."""

    def __init__(self, rename: Mapping[str, str]) -> None:
        self.rename = rename

    def visit_Call(self, node: ast.Call) -> ast.Call:
        node.args = [self.visit(arg) for arg in node.args]
        emitted = FUNCTIONS[node.func.id][0]  # type: ignore[attr-defined]
        module, _, attr = emitted.rpartition(".")
        func: ast.expr = ast.Name(attr, ast.Load())
        if module:
            func = ast.Attribute(ast.Name(module, ast.Load()), attr, ast.Load())
        node.func = func
        return node

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(self.rename[node.id], ast.Load())


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
