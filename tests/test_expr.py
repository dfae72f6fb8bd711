"""Tests for derive.expr: the safe expression language."""

from __future__ import annotations

import ast
import math
import pathlib
import time

import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derive import expr
from derive.errors import SpecError
from derive.expr import FUNCTIONS, MAX_DEPTH, MAX_LENGTH, MAX_NODES, parse

z, y, yhat, u, g = sympy.symbols("z y yhat u g")
VARS = {"z": z, "y": y, "yhat": yhat, "u": u, "g": g}
POINTS = [-2.5, -0.75, 0.0, 0.3, 1.0, 3.2]


def value(e: sympy.Basic, **at: float) -> float:
    """Numeric value of ``e`` with the named variables substituted."""
    return float(sympy.N(e.subs({VARS[k]: sympy.Float(v) for k, v in at.items()})))


def reject(text, match: str, where: str = "spec.toml:3 activation") -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, VARS, where=where)
    message = str(info.value)
    assert message.startswith(f"{where}: ")
    assert match in message, message
    return info.value


def conditions(e: sympy.Basic) -> list[sympy.Basic]:
    return [c for p in e.atoms(sympy.Piecewise) for _, c in p.args]


# ---------------------------------------------------------------- functions and values

@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("exp(z)", math.exp),
        ("log(z + 3)", lambda x: math.log(x + 3)),
        ("log1p(z + 2)", lambda x: math.log1p(x + 2)),
        ("sqrt(z + 3)", lambda x: math.sqrt(x + 3)),
        ("tanh(z)", math.tanh),
        ("sigmoid(z)", lambda x: 1 / (1 + math.exp(-x))),
        ("softplus(z)", lambda x: math.log1p(math.exp(x))),
        ("abs(z)", abs),
        ("max(z, 0.5)", lambda x: max(x, 0.5)),
        ("min(z, 0.5)", lambda x: min(x, 0.5)),
        ("where(z > 0, z, 0.1*z)", lambda x: x if x > 0 else 0.1 * x),
        ("where(0 < z <= 1, 1, 2)", lambda x: 1 if 0 < x <= 1 else 2),
        ("where(z < -1 or z > 1 and not z > 3, z, -z)", lambda x: x if x < -1 or 1 < x <= 3 else -x),
        ("sin(z) + cos(z)", lambda x: math.sin(x) + math.cos(x)),
        ("atan(z)", math.atan),
        ("erf(z)", math.erf),
        ("z * sigmoid(z)", lambda x: x / (1 + math.exp(-x))),
        ("-z**2 / 4 - +z + 2**-1", lambda x: -(x**2) / 4 - x + 0.5),
        ("pi * z + e", lambda x: math.pi * x + math.e),
        ("max(u, abs(z))", lambda x: abs(x)),  # u = 0 below
        ("min(max(z, -1), 1)", lambda x: min(max(x, -1), 1)),
        ("where(abs(z) <= 1, 0.5*z**2, abs(z) - 0.5)", lambda x: 0.5 * x * x if abs(x) <= 1 else abs(x) - 0.5),
        ("abs(abs(z) - 1)", lambda x: abs(abs(x) - 1)),
    ],
)
def test_functions_evaluate_like_python(text, reference):
    e = parse(text, VARS)
    assert isinstance(e, sympy.Expr)
    for x in POINTS:
        assert value(e, z=x, u=0.0) == pytest.approx(reference(x), rel=1e-12, abs=1e-12), (text, x)


def test_structural_mapping():
    assert parse("sigmoid(z)", VARS) == 1 / (1 + sympy.exp(-z))
    assert parse("softplus(z)", VARS) == sympy.log(1 + sympy.exp(z))
    assert parse("log1p(z)", VARS) == sympy.log(1 + z)
    assert parse("abs(z)", VARS) == sympy.Piecewise((z, z >= 0), (-z, True))
    assert parse("max(z, y)", VARS) == sympy.Piecewise((z, z >= y), (y, True))
    assert parse("min(z, y)", VARS) == sympy.Piecewise((z, z <= y), (y, True))
    assert parse("where(z > 0, z, y)", VARS) == sympy.Piecewise((z, z > 0), (y, True))
    assert parse("where(0 < z < 1, z, y)", VARS) == sympy.Piecewise((z, (z > 0) & (z < 1)), (y, True))
    loss = parse("-(y*log(yhat) + (1-y)*log(1-yhat))", VARS)
    assert loss == -(y * sympy.log(yhat) + (1 - y) * sympy.log(1 - yhat))
    for text in ("abs(z)", "max(z, 1)", "min(z, 1)", "where(z > 1, z, 1)"):
        e = parse(text, VARS)
        assert isinstance(e, sympy.Piecewise)
        assert not e.atoms(sympy.Abs, sympy.Max, sympy.Min, sympy.Heaviside)


def test_literal_policy():
    assert parse("2", VARS) == sympy.Integer(2) and isinstance(parse("2", VARS), sympy.Integer)
    assert parse("0.1", VARS) == sympy.Rational(1, 10)
    assert parse("1e-3", VARS) == sympy.Rational(1, 1000)
    assert parse("2.5e2", VARS) == 250
    assert parse("0.1*z", VARS) == z / 10
    assert parse("z**0.5", VARS) == sympy.sqrt(z)
    # constants that are not rational become 30-digit Floats; pi and e alone stay exact
    root2 = parse("2**0.5", VARS)
    assert isinstance(root2, sympy.Float) and abs(root2 - sympy.sqrt(2)) < 1e-29
    assert isinstance(parse("log(3) + sin(1)", VARS), sympy.Float)
    assert parse("pi*z", VARS) == sympy.pi * z
    assert parse("1_000", VARS) == 1000
    assert not parse("0.3*z + 1.5", VARS).atoms(sympy.Float)
    assert parse("1e300", VARS) == sympy.Integer(10) ** 300


def test_names_and_constants():
    assert parse("pi", VARS) is sympy.pi
    assert parse("e", VARS) is sympy.E
    e_var = sympy.Symbol("e")
    assert parse("e + 1", {"e": e_var}) == e_var + 1  # variables shadow constants
    assert parse("  z", VARS) == z
    assert parse("\n  (z +\n   1)\n", VARS) == z + 1
    assert FUNCTIONS == tuple(sorted(FUNCTIONS))
    assert {"exp", "log", "log1p", "sqrt", "tanh", "sigmoid", "softplus", "abs", "max", "min", "where"} <= set(
        FUNCTIONS
    )


# ---------------------------------------------------------------- differentiation

def test_derivatives():
    leaky = sympy.diff(parse("where(z > 0, z, 0.1*z)", VARS), z)
    assert leaky == sympy.Piecewise((1, z > 0), (sympy.Rational(1, 10), True))
    s = parse("sigmoid(z)", VARS)
    ds = sympy.diff(s, z)
    for x in POINTS:
        assert value(ds, z=x) == pytest.approx(value(s * (1 - s), z=x))
    assert isinstance(sympy.diff(parse("abs(z)", VARS), z), sympy.Piecewise)
    swish = sympy.diff(parse("z * sigmoid(z)", VARS), z)
    assert value(swish, z=0.0) == pytest.approx(0.5)
    dsp = sympy.diff(parse("softplus(z)", VARS), z)
    assert value(dsp, z=0.3) == pytest.approx(1 / (1 + math.exp(-0.3)))


def test_conditions_never_contain_piecewise():
    # SymPy would solve these inequalities (as_set) if a Piecewise reached a condition,
    # which for the polynomial below runs for minutes; parse lifts it out as ITE instead.
    start = time.perf_counter()
    cases = [
        "where(abs(z**100 - 3*z**37 + z - 1) > 1, z, 0)",
        "max(0.9*u, abs(g))",
        "abs(abs(abs(z**99 - z**98 + z**5 - 1) - z**51) - 1)",
        "where(abs(z) > 1 and max(z, g) < 3, z, 0)",
    ]
    for text in cases:
        e = parse(text, VARS)
        assert all(not c.has(sympy.Piecewise) for c in conditions(e)), text
        sympy.diff(e, z)
    assert time.perf_counter() - start < 10
    adamax = parse("max(0.9*u, abs(g))", VARS)
    for uu, gg in [(1.0, -2.0), (1.0, 0.5), (-1.0, -0.1), (0.0, 0.0)]:
        assert value(adamax, u=uu, g=gg) == pytest.approx(max(0.9 * uu, abs(gg)))


# ---------------------------------------------------------------- rejections

@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("z.__class__", "attribute access 'z.__class__' is not allowed at column 1"),
        ("z[0]", "subscript"),
        ("lambda: 1", "lambda"),
        ("[z for z in y]", "comprehension"),
        ("{z for z in y}", "comprehension"),
        ("(z for z in y)", "comprehension"),
        ("'abc'", "string literal"),
        ("b'abc'", "bytes literal"),
        ("max(z, y=1)", "keyword argument 'y='"),
        ("max(**z)", "keyword argument '**'"),
        ("max(*z)", "starred argument '*z'"),
        ("(w := 1)", "assignment expression"),
        ("f'{z}'", "f-string"),
        ("(exp)(z)", "calling '(exp)' is not allowed"),
        ("(lambda x: x)(z)", "calling"),
        ("max(z)", "max(...) takes 2 argument(s), got 1"),
        ("exp(z, y)", "exp(...) takes 1 argument(s), got 2"),
        ("where(z > 0, z)", "where(...) takes 3 argument(s)"),
        ("True", "literal True"),
        ("None", "literal None"),
        ("1j", "complex number literal"),
        ("z > 0", "'>' is only allowed in the condition of where"),
        ("0 < z < 1", "'<' is only allowed"),
        ("z and y", "'and' is only allowed"),
        ("not z", "'not' is only allowed"),
        ("z == 1", "'==' is only allowed"),
        ("where(z == 1, 1, 2)", "comparison '==' is not allowed"),
        ("where(z, 1, 2)", "condition of where(...) must be a comparison"),
        ("where(z is y, 1, 2)", "comparison 'is' is not allowed"),
        ("z if y else 1", "conditional expression"),
        ("z // 2", "operator '//'"),
        ("z % 2", "operator '%'"),
        ("z @ y", "operator '@'"),
        ("z ^ y", "operator '^'"),
        ("~z", "operator '~'"),
        ("(z, y)", "tuple"),
        ("[z]", "list"),
        ("{1: z}", "dict"),
        ("...", "literal"),
        ("zz + 1", "unknown name 'zz' at column 1; did you mean 'z'? Valid names: e, g, pi, u, y, yhat, z."),
        ("z + zz", "unknown name 'zz' at column 5"),
        ("exp", "function 'exp' must be called"),
        ("eval(z)", "function 'eval' is not allowed at column 1. Allowed functions: abs,"),
        ("sigmod(z)", "function 'sigmod' is not allowed at column 1; did you mean 'sigmoid'?"),
        ("z(1)", "'z' is not a function"),
        ("import os", "'import' is not allowed at column 1"),
        ("1; import os", "'import' is not allowed at column 4"),
        ("z +", "syntax error at the end"),
        ("z + )", "syntax error at column 5"),
        ("(z", "syntax error at column 1"),
        ("z $ y", "syntax error at column 3"),
        ("z\x00", "syntax error"),
        ("z # comment", "'#' is not allowed at column 3"),
        ("", "expression is empty"),
        ("   \n ", "expression is empty"),
        ("1/0", "undefined, infinite or complex"),
        ("log(0)", "undefined, infinite or complex"),
        ("sqrt(-1)", "undefined, infinite or complex"),
        ("(-8)**(1/3)", "is not a finite real number"),
        ("log(-2)", "undefined, infinite or complex (I)"),
        ("await z", "await"),
        ("(yield z)", "yield"),
    ],
)
def test_rejections_name_the_construct(text, match):
    reject(text, match)


def test_column_counts_characters_of_the_original_text():
    reject("  zz", "unknown name 'zz' at column 3")
    reject("(z +\n zz)", "unknown name 'zz' at column 7")
    with pytest.raises(SpecError, match="unknown name 'zz' at column 7"):
        parse("é + é*zz", {"é": z})
    reject("é + $", "syntax error at column 5")


@pytest.mark.parametrize("bad", [5, None, b"z", ["z"], 1.5])
def test_non_string_input(bad):
    reject(bad, "must be a string")


def test_default_where():
    with pytest.raises(SpecError, match=r"^expression: unknown name"):
        parse("q", VARS)
    error = reject("q", "unknown name", where="model.toml:7 loss")
    assert error.where == "model.toml:7 loss"


# ---------------------------------------------------------------- bounds

def test_length_limit():
    reject("z" * (MAX_LENGTH + 1), "too long")
    reject("(" * 5000 + "z" + ")" * 5000, "too long")
    assert parse(" " * (MAX_LENGTH - 1) + "z", VARS) == z


def test_depth_and_node_limits_are_checked_before_building():
    reject("-" * (MAX_DEPTH + 5) + "z", "nested too deeply")
    reject("(" * 300 + "z" + ")" * 300, "syntax error")  # CPython's own parenthesis limit
    reject("exp(" * 60 + "z" + ")" * 60, "nested too deeply")
    balanced = "z"
    while 2 * balanced.count("z") - 1 <= MAX_NODES:
        balanced = f"({balanced}+{balanced})"
    assert len(balanced) <= MAX_LENGTH
    reject(balanced, "too many parts")
    reject("where(" + "<".join(["z"] * 600) + ", 1, 2)", "too many parts")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("z**10**10", "exponent '10**10' is too large"),
        ("(z+1)**100000", "exponent '100000' is too large"),
        ("z**-101", "too large"),
        ("z**(99*99)", "too large"),
        ("9**99**99", "too large"),
        ("(2**99)**99", "number that is too large"),
        ("(2**99)**11", "number that is too large"),
        ("((1e300*z)**50)", "number that is too large"),
        ("1e300*1e300*1e300*1e300*1e300", "number that is too large"),
        ("1e301", "too large"),
        ("10**301 + z", "exponent '301' is too large"),
        ("((10**100)**100)", "number that is too large"),
        ("(1e-300)**14", "too many digits"),
        ("exp(1000)", "number that is too large"),
        ("1/sigmoid(-1e300)", "number that is too large"),
        ("max(sin(((pi**100)**100)**100), 0)", "number that is too large"),
        ("where(exp(exp(1e300)) > 0, z, 0)", "number that is too large"),
        ("1" + "0" * 301, "too large"),
        ("1e999", "too large"),
        ("abs(abs(abs(abs(abs(abs(abs(abs(z))))))))", "expands to more than"),
        ("sigmoid(" * 30 + "z" + ")" * 30, "nested too deeply once expanded"),
        ("where(" + "*".join(f"abs(z-{i})" for i in range(40)) + " > 0, z, y)", "too deeply in conditions"),
    ],
)
def test_numeric_and_size_bounds(text, match):
    start = time.perf_counter()
    reject(text, match)
    assert time.perf_counter() - start < 5


def test_constants_cannot_stall_sympy():
    # Each group is exactly zero; deciding max(..., 0) exactly makes SymPy compute a minimal
    # polynomial of huge degree (hours).  Evaluated constants make it immediate.
    groups = ["sqrt(5+2*sqrt(6)) - sqrt(2) - sqrt(3)", "sqrt(12+2*sqrt(35)) - sqrt(5) - sqrt(7)",
              "sqrt(24+2*sqrt(143)) - sqrt(11) - sqrt(13)", "sqrt(36+2*sqrt(323)) - sqrt(17) - sqrt(19)"]
    start = time.perf_counter()
    e = parse(f"max({' + '.join(groups)}, 0) + z", VARS)
    assert time.perf_counter() - start < 2
    assert abs(value(e, z=0.0)) < 1e-25


def test_allowed_at_the_bounds():
    assert parse("z**100", VARS) == z**100
    assert parse("(z+1)**-100", VARS) == (z + 1) ** -100
    assert parse("2**100", VARS) == 2**100
    assert parse("-1e300", VARS) == -(sympy.Integer(10) ** 300)


# ---------------------------------------------------------------- safety

def test_evil_strings_raise_and_do_nothing(tmp_path: pathlib.Path):
    target = tmp_path / "pwned"
    evil = [
        f"__import__('os').system('touch {target}')",
        "().__class__.__bases__[0].__subclasses__()",
        f"eval(\"__import__('os').system('touch {target}')\")",
        f"exec('open(\"{target}\", \"w\")')",
        f"open('{target}', 'w')",
        "[c for c in ().__class__.__base__.__subclasses__()]",
        "z.__class__.__init__.__globals__",
        f"(lambda: __import__('os').system('touch {target}'))()",
        "getattr(z, '__class__')",
        "__builtins__",
        "sympify('z')",
        "globals()",
    ]
    for text in evil:
        with pytest.raises(SpecError):
            parse(text, VARS, where="evil")
    assert not target.exists()


def test_module_never_evaluates_text():
    tree = ast.parse(pathlib.Path(expr.__file__).read_text())
    forbidden = {"eval", "exec", "compile", "sympify", "parse_expr", "lambdify", "S", "__import__"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            assert name not in forbidden, f"expr.py calls {name} at line {node.lineno}"


# ---------------------------------------------------------------- fuzzing

TOKENS = [
    "z", "y", "yhat", "pi", "e", "zz", "x", "0", "1", "2", "0.5", "1e3", "1e-3", "100", "101", "9" * 12,
    "1e400", "0x1f", "1j", "True", "None", "+", "-", "*", "/", "**", "//", "%", "@", "~", "(", ")", "(", ")",
    ",", "<", ">", "<=", ">=", "==", "and", "or", "not", "if", "else", "for", "in", "lambda", ":", "=", ":=",
    ".", "[", "]", "{", "}", "'", '"', "f'", "#", "\n", "\\", "*", "**", " ", " ", *FUNCTIONS, "eval",
    "exec", "__import__", "__class__", "__subclasses__", "__globals__", "os", "system", "import", "yield",
]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_total(text) -> None:
    """parse returns an Expr or raises SpecError; nothing else, and never slowly."""
    start = time.perf_counter()
    try:
        result = parse(text, VARS, where="fuzz")
    except SpecError as error:
        assert str(error).startswith("fuzz: ")
    else:
        assert isinstance(result, sympy.Expr)
    assert time.perf_counter() - start < 5, text


@SETTINGS
@given(st.text(max_size=200))
def test_fuzz_random_text(text):
    check_total(text)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.sampled_from(["", " "]))
def test_fuzz_token_soup(tokens, sep):
    check_total(sep.join(tokens))


LEAVES = st.sampled_from(["z", "y", "u", "0", "1", "2", "0.5", "3", "pi", "e", "100", "1e300", "1e-3", "sqrt(2)", "-7"])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ops = st.sampled_from(["+", "-", "*", "/", "**"])
    cmp = st.sampled_from(["<", "<=", ">", ">="])
    unary = st.sampled_from([f for f in FUNCTIONS if expr._ARITY[f] == 1])
    return st.one_of(
        st.tuples(children, ops, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(unary, children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["max", "min"]), children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(children, cmp, children, children, children).map(
            lambda t: f"where({t[0]} {t[1]} {t[2]}, {t[3]}, {t[4]})"
        ),
        children.map(lambda c: f"-{c}"),
    )


@SETTINGS
@given(st.recursive(LEAVES, _combine, max_leaves=10))
def test_fuzz_grammatical_expressions_parse_and_differentiate(text):
    check_total(text)
    try:
        result = parse(text, VARS)
    except SpecError:
        return
    sympy.diff(result, z)  # whatever parse accepts, SymPy can differentiate
