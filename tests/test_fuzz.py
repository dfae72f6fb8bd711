"""Spec fuzzing: random TOML text, random spec tables and random expression strings give either
a valid build (into a temporary folder) or a SpecError — never another exception, never a file
outside --out, never a hang. Runs derandomized in bounded time; DERIVE_FUZZ_SCALE=10 runs ten
times as many examples, DERIVE_FUZZ_RANDOM=1 draws new ones on every run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from derive import userblocks
from derive.build import build
from derive.errors import SpecError
from derive.expr import FUNCTIONS
from derive.spec import Model, parse_catalogue

SCALE = max(1, int(os.environ.get("DERIVE_FUZZ_SCALE", "1")))
RANDOM = os.environ.get("DERIVE_FUZZ_RANDOM", "") not in ("", "0")
pytestmark = pytest.mark.filterwarnings("ignore::derive.userblocks.SpecWarning")


def fuzz(examples: int):
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=not RANDOM, database=None,
                    suppress_health_check=list(HealthCheck))


#: Seconds one example may take at most (SymPy work of user blocks is bounded by TIME_LIMIT).
EXAMPLE_SECONDS = 60


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    monkeypatch.setattr(userblocks, "TIME_LIMIT", 8.0)
    with userblocks.isolated():
        yield


@contextlib.contextmanager
def bounded(what: str):
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    assert took < EXAMPLE_SECONDS, f"{what} took {took:.1f} s"


def outcome(text: str, source: str = "fuzz.toml"):
    """parse_catalogue's result: the models, or the SpecError. Anything else propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            models = parse_catalogue(text, source)
        except SpecError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            event("SpecError")
            return exc
    event("valid catalogue")
    return models


def build_checked(models) -> None:
    """Build into a fresh folder inside a fresh root: files appear in --out and nowhere else."""
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        out = root / "pkg" / "out"
        result = build(models, models, out, "fuzz.toml")
        files = {p.relative_to(root) for p in root.rglob("*")}
        want = {Path("pkg"), Path("pkg/out")} | {Path("pkg/out") / f"{m.name}.py" for m in models}
        assert files == want | {Path("pkg/out/__init__.py"), Path("pkg/out/_kernel_runtime.py")}, files
        assert sorted(p.name for p in result.written) == sorted([f"{m.name}.py" for m in models]
                                                                + ["__init__.py", "_kernel_runtime.py"])
        for path in result.written:
            compile(path.read_text(encoding="utf-8"), str(path), "exec")


# ----------------------------------------------------------------------------- TOML writing


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    lines = []
    for kind, tables in doc.items():
        for name, body in tables.items():
            lines.append(f"[{kind}.{json.dumps(name)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- strategies

names = st.one_of(st.sampled_from(["m", "net", "xor2", "a_b", "Net", "os", "MODELS", "class", "_x", "x" * 101,
                                   "../up", "a/b", "a\\b", "..", ".", "", " ", "con", "nul\x00", "é", "W1", "lin"]),
                  st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), st.text(max_size=12))
numbers = st.one_of(st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 0.5, 1e-8, 0.9, 0.999, 1e300, -1.0, 1_000_001, True]))
activation_names = st.sampled_from(["identity", "linear", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu",
                                    "silu", "swish", "logistic", "sigmod", "", "exp", 3])
layer = st.one_of(
    st.tuples(st.integers(1, 4), activation_names).map(list),
    st.tuples(st.integers(1, 4), st.sampled_from(["leaky_relu", "elu", "tanh"]),
              st.dictionaries(st.sampled_from(["slope", "alpha", "beta"]), numbers, max_size=2)).map(list),
    st.lists(numbers, max_size=3), numbers, st.text(max_size=5))
optimizer = st.one_of(
    st.sampled_from(["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam",
                     "adamm", ""]),
    st.fixed_dictionaries({"name": st.sampled_from(["sgd", "adam", "rmsprop", "momentum", "adagrad", "nadam"])},
                          optional={"lr": numbers, "beta1": numbers, "momentum": numbers, "eps": numbers,
                                    "centered": st.booleans(), "amsgrad": st.one_of(st.booleans(), numbers),
                                    "ema": st.booleans(), "nesterov": st.booleans()}),
    numbers)
sane_body = st.fixed_dictionaries(
    {"inputs": st.integers(1, 3),
     "layers": st.lists(st.tuples(st.integers(1, 3), st.sampled_from(["tanh", "relu", "sigmoid", "identity", "elu",
                                                                      "silu", "softplus"])).map(list),
                        min_size=1, max_size=3),
     "loss": st.just("mse")},
    optional={"optimizer": st.fixed_dictionaries({"name": st.sampled_from(["sgd", "adam", "rmsprop", "momentum",
                                                                           "adagrad", "nadam", "adadelta"])},
                                                 optional={"lr": st.floats(1e-4, 1.0)}),
              "schedule": st.sampled_from(["constant", "step", "cosine", "exponential", "inverse_time"]),
              "clip": st.fixed_dictionaries({}, optional={"norm": st.floats(0.1, 10), "value": st.floats(0.1, 10)}),
              "regularization": st.fixed_dictionaries({}, optional={"l1": st.floats(0, 0.1), "l2": st.floats(0, 0.1)}),
              "description": st.text(max_size=20)})
any_body = st.fixed_dictionaries(
    {"inputs": st.one_of(st.integers(1, 4), numbers, st.text(max_size=3)),
     "layers": st.one_of(st.lists(layer, min_size=1, max_size=3), st.lists(layer, max_size=0), numbers),
     "loss": st.one_of(st.sampled_from(["mse", "bce", "l2", "cross_entropy", "mae", ""]), numbers)},
    optional={"optimizer": optimizer,
              "schedule": st.one_of(st.sampled_from(["constant", "step", "cosine", "warm"]),
                                    st.fixed_dictionaries({"name": st.sampled_from(["step", "exponential",
                                                                                    "multistep"])},
                                                          optional={"gamma": numbers, "step_size": numbers,
                                                                    "milestones": st.lists(st.integers(-1, 5),
                                                                                           max_size=3),
                                                                    "per": st.sampled_from(["epoch", "step", "x"])})),
              "clip": st.dictionaries(st.sampled_from(["norm", "value", "max"]), numbers, max_size=2),
              "regularization": st.dictionaries(st.sampled_from(["l1", "l2", "decoupled_weight_decay", "l3"]),
                                                numbers, max_size=2),
              "description": st.text(max_size=20),
              "unknown_key": numbers})

# Expressions: a grammar of valid ones (bounded depth) over each kind's variables (plus a
# stray name now and then), and token soup (mostly invalid).
VARIABLES = {"activation": ["z"], "loss": ["yhat", "y"], "update": ["theta", "g", "t", "lr", "beta", "m"],
             "state": ["lr", "beta"]}
CONSTANTS = ["0", "1", "2", "0.5", "1e-3", "3.7", "1e308", "1e-320", "100", "10**400", "(-1)", "pi", "e"]


def _combine(children):
    unary = st.tuples(st.sampled_from([f for f in FUNCTIONS if f not in ("max", "min", "where")] + ["-", "+"]),
                      children).map(lambda p: f"{p[0]}({p[1]})" if p[0] not in "+-" else f"{p[0]}({p[1]})")
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**"]), children).map(
        lambda p: f"({p[0]} {p[1]} {p[2]})")
    pair = st.tuples(st.sampled_from(["max", "min"]), children, children).map(lambda p: f"{p[0]}({p[1]}, {p[2]})")
    where = st.tuples(children, st.sampled_from(["<", "<=", ">", ">="]), children, children, children).map(
        lambda p: f"where({p[0]} {p[1]} {p[2]}, {p[3]}, {p[4]})")
    return st.one_of(unary, binary, pair, where)


def valid_expressions(kind: str):
    names = st.sampled_from(VARIABLES[kind])
    atoms = st.one_of(names, names, names, st.sampled_from(CONSTANTS), st.sampled_from(["x", "z", "yhat"]))
    return st.recursive(atoms, _combine, max_leaves=8)


TOKENS = ["z", "yhat", "y", "g", "theta", "(", ")", "+", "-", "*", "/", "**", "//", "%", "@", ",", ".", "[", "]",
          "lambda", "import", "__import__", "__class__", "os", "exec", "eval", "'s'", '"s"', "1", "2.5", "1e999",
          "exp", "log", "where", "max", "abs", "sqrt", "if", "else", ">", "==", "and", "not", " ", "\n", "#", ":=",
          "\\", "\x00", "é", "{", "}", "...", "...", "0x1f", "1j", "True", "None", "f'{z}'", ";"]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)
odd_expressions = st.one_of(token_soup, st.text(max_size=60),
                            st.integers(0, 300).map(lambda n: "(" * n + "z" + ")" * n),
                            st.integers(0, 200).map(lambda n: "-" * n + "z"),
                            st.integers(1, 120).map(lambda n: "+".join(["tanh(z)"] * n)),
                            st.integers(1, 40).map(lambda n: "exp(" * n + "z" + ")" * n))


def expressions(kind: str):
    return st.one_of(valid_expressions(kind), valid_expressions(kind), valid_expressions(kind), odd_expressions)


def block_name(kind: str, text: object) -> str:
    """One name per definition, so re-declaring is idempotent and never a conflict."""
    return f"fz_{kind[0]}_{hashlib.sha1(repr(text).encode()).hexdigest()[:10]}"


# ----------------------------------------------------------------------------- the properties


FRAGMENTS = ['[model.m]\n', '[model.n]\n', 'inputs = 2\n', 'inputs = -1\n', 'layers = [[2, "tanh"], [1, "sigmoid"]]\n',
             'layers = [[1, "identity"]]\n', 'loss = "bce"\n', 'loss = "mse"\n', 'optimizer = "adam"\n',
             'optimizer = { name = "sgd", lr = 0.5 }\n', '[activation.a]\n', 'expr = "z*tanh(z)"\n',
             'expr = "log(z)"\n',
             '[loss.l]\n', 'expr = "(yhat - y)**2"\n', '[optimizer.o]\n', 'hyper = { lr = 0.1 }\n',
             'update = [["theta", "theta - lr*g"]]\n', 'layers = [[2, "a"], [1, "identity"]]\n', 'loss = "l"\n',
             'optimizer = "o"\n', '[model]\n', 'x = 1\n', '"\n', '[[model.m]]\n', 'description = """\n"""\n',
             'schedule = "step"\n', 'clip = { norm = 0 }\n']


@fuzz(120)
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)))
def test_random_toml_text_is_a_catalogue_or_a_spec_error(text):
    with bounded("parse_catalogue"):
        result = outcome(text)
    assert isinstance(result, (dict, SpecError))


@fuzz(30)
@given(st.dictionaries(names, st.one_of(sane_body, any_body), min_size=1, max_size=2))
def test_random_spec_tables_build_or_give_a_spec_error(tables):
    text = to_toml({"model": tables})
    with bounded("load and build"):
        result = outcome(text)
        if isinstance(result, dict):
            build_checked(list(result.values()))


@fuzz(100)
@given(st.sampled_from(["activation", "loss", "update", "state"]).flatmap(lambda k: st.tuples(st.just(k),
                                                                                             expressions(k))))
def test_random_expressions_give_a_block_or_a_spec_error(pair):
    kind, text = pair
    body = {"activation": lambda: ("activation", {"expr": text}),
            "loss": lambda: ("loss", {"expr": text}),
            "update": lambda: ("optimizer", {"hyper": {"lr": 0.1, "beta": 0.9}, "state": {"m": 0},
                                             "update": [["m", "beta*m + g"], ["theta", text]]}),
            "state": lambda: ("optimizer", {"hyper": {"lr": 0.1, "beta": 0.9}, "state": {"m": text},
                                            "update": [["m", "beta*m + g"], ["theta", "theta - lr*m"]]})}[kind]
    block_kind, table = body()
    with bounded(f"{kind} {text!r}"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            declaration = userblocks.declare(block_kind, "fz_block", table, "fuzz.toml:1")
        except SpecError as exc:
            assert str(exc).startswith("fuzz.toml:1")
            event(f"{kind}: SpecError")
            return
    event(f"{kind}: valid")
    assert declaration.name == "fz_block"


ACTIVATION_POOL = ["z*sigmoid(z)", "tanh(z) + 0.1*z", "z/(1 + abs(z))", "where(z > 0, z, 0.2*z)", "z**2", "log(z)",
                   "1/z", "sqrt(1 + z**2) - 1", "max(z, 0.1*z)", "softplus(z) - log(2)", "z*tanh(z)", "atan(z)"]
LOSS_POOL = ["(yhat - y)**2/2", "abs(yhat - y)", "(yhat - y)**4", "log(yhat)",
             "where(abs(yhat - y) < 1, (yhat - y)**2, 2*abs(yhat - y) - 1)", "sqrt(1 + (yhat - y)**2)"]
UPDATE_POOL = [[["theta", "theta - lr*g"]], [["m", "beta*m + g"], ["theta", "theta - lr*m"]],
               [["m", "beta*m + (1 - beta)*g*g"], ["theta", "theta - lr*g/sqrt(m)"]],
               [["m", "beta*m + (1 - beta)*g*g"], ["theta", "theta - lr*g/(sqrt(m) + 1e-8)"]],
               [["theta", "theta - lr*where(g > 0, 1, -1)"]], [["m", "max(m, abs(g))"], ["theta", "theta - lr*g"]]]


@fuzz(12)
@given(st.sampled_from(ACTIVATION_POOL), st.sampled_from(LOSS_POOL), st.sampled_from(range(len(UPDATE_POOL))),
       st.booleans(), st.integers(1, 3))
def test_random_user_blocks_build_or_give_a_spec_error(act, loss, update, act_is_output, units):
    """Whole catalogues with user blocks, end to end (SymPy work bounded by TIME_LIMIT)."""
    updates = UPDATE_POOL[update]
    state = {"m": 0} if any(tg == "m" for tg, _ in updates) else {}
    a, ell, o = block_name("activation", act), block_name("loss", loss), block_name("optimizer", updates)
    layers = [[units, "tanh"], [1, a]] if act_is_output else [[units, a], [1, "identity"]]
    doc = {"activation": {a: {"expr": act}}, "loss": {ell: {"expr": loss}},
           "optimizer": {o: {"hyper": {"lr": 0.05, "beta": 0.9}, "state": state, "update": updates}},
           "model": {"fz_model": {"inputs": 2, "layers": layers, "loss": ell, "optimizer": o}}}
    with bounded(f"{act} / {loss} / {updates}"):
        result = outcome(to_toml(doc))
        if isinstance(result, dict):
            build_checked(list(result.values()))


@fuzz(40)
@given(st.text(min_size=1, max_size=30))
def test_hostile_model_names_never_leave_out(name):
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        out = root / "out"
        text = to_toml({"model": {name: {"inputs": 1, "layers": [[1, "identity"]], "loss": "mse"}}})
        result = outcome(text)
        if isinstance(result, dict):
            assert [m.name for m in result.values()] == [name] and name.isidentifier()
            build(list(result.values()), list(result.values()), out, "fuzz.toml")
            assert {p.name for p in out.iterdir()} == {"__init__.py", "_kernel_runtime.py", f"{name}.py"}
            assert {p for p in root.iterdir()} == {out}
        else:
            assert not any(root.iterdir())


@fuzz(40)
@given(names, st.integers(-2, 5), st.lists(layer, max_size=3), st.one_of(st.text(max_size=6), numbers), optimizer)
def test_python_api_gives_a_model_or_a_spec_error(name, inputs, layers, loss, opt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = Model(name, inputs, layers, loss, opt)
        except SpecError:
            return
    assert model.name == name and model.inputs == inputs
