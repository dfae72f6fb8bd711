"""User-defined activations, losses and optimizers, declared as text in a spec file.

::

    [activation.swish_beta]
    expr = "z * sigmoid(beta * z)"
    params = { beta = 1.0 }                 # positive numbers; a layer may override them

    [loss.pseudo_huber]
    expr = "sqrt(1 + (yhat - y)**2) - 1"
    # needs_range = [0, 1]                  # optional: predictions must lie in this interval

    [optimizer.adamax_like]
    hyper = { lr = 0.002, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 }
    state = { m = 0, u = 0 }                # initial values: numbers or expressions of hyper
    update = [["m", "beta1*m + (1 - beta1)*g"],
              ["u", "max(beta2*u, abs(g) + eps)"],
              ["theta", "theta - lr/(1 - beta1**t) * m/u"]]

Every expression is read by :func:`derive.expr.parse` (never ``eval``/``sympify``) into the
same SymPy objects the built-in blocks are made of, and the resulting rules are registered in
the same registries, so they take exactly the derivation and code-generation path of the
built-ins. Before that, each declaration is checked:

* names: Python identifiers that shadow neither a built-in block nor a name the generated
  kernels use (see :func:`check_kernel_name`);
* size: at most :data:`MAX_BLOCK_SIZE` SymPy nodes per expression (on top of the parser's bounds);
* values: the expression and its derivative are finite and real at sample points
  (z on [-8, 8] for activations, the targets' and predictions' ranges for losses; a few steps at
  sample gradients for optimizers), otherwise a :class:`~derive.errors.SpecError` names the point;
* kinks: where a ``where``/``abs``/``max``/``min`` branch switches, a jump of the function or of
  its derivative gives a :class:`SpecWarning` (the kernel then uses one side's derivative);
* time: the SymPy work for a model that uses user blocks runs at load time under a wall-clock
  limit (:data:`TIME_LIMIT`, main thread only), so a pathological expression fails clearly
  instead of hanging.

Registration is global and deterministic: a name keeps one definition per process. Declaring
the same name again with the same definition is a no-op; with a different one it is a
SpecError naming the first declaration; a built-in name can never be shadowed. A catalogue may
only use the user blocks it declares itself (so a catalogue means the same whatever was loaded
before). :func:`isolated` undoes registrations (for tests and long-running processes).
"""

from __future__ import annotations

import builtins
import contextlib
import math
import re
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .blocks import activations, joint, losses, optimizers
from .errors import BuildError, DeriveError, SpecError, suggest
from .expr import FUNCTIONS, parse
from .names import check_name
from .symbolic import PARAM_SAMPLES, Y_SAMPLES, Z_SAMPLES, a, y, z

KINDS = ("activation", "loss", "optimizer")
ACTIVATION_KEYS = ("expr", "params")
LOSS_KEYS = ("expr", "needs_range", "log_floor")
OPTIMIZER_KEYS = ("hyper", "state", "update")
HYPER_KEYS = ("default", "min", "max")

MAX_BLOCK_SIZE = 300  # SymPy tree nodes of one user expression (the parser allows 5000)
MAX_NAME_LENGTH = 64
MAX_PARAMS = 8
MAX_HYPER = 16
MAX_STATE = 16
MAX_UPDATES = 32
#: Seconds of SymPy work allowed for the user blocks of one model (output forms, joint deltas).
TIME_LIMIT = 120.0

#: z values where activations (and their derivatives) must be finite and real: a grid over
#: [-8, 8] with 0, plus the points every symbolic rewriting is verified at.
Z_GRID = tuple(sorted({*(k / 4 for k in range(-32, 33)), *Z_SAMPLES}))
#: Unbounded predictions/targets for losses without needs_range.
FREE_GRID = tuple(sorted({*(k / 2 for k in range(-16, 17)), *Z_SAMPLES}))
#: Large |z| where a user activation's kernel forms are compared with the exact values.
EXTREME_Z = (-1e9, -1e3, -100.0, -30.0, 30.0, 100.0, 1e3, 1e9)
#: Parameter elements, gradients and steps an optimizer is tried at.
THETA_SAMPLES = (-1.3, 0.0, 0.7, 2.4)
G_SAMPLES = (-2.1, 0.0, 0.4, 3.3)
STEPS = 3


class SpecWarning(UserWarning):
    """A user block is accepted but has a caveat (a kink, a form that overflows far out)."""


# ----------------------------------------------------------------------------- names

#: Identifiers the generated modules use (module globals, kernel arguments and locals, wrapper
#: locals): an optimizer hyperparameter, state variable or temporary with one of these names
#: would shadow or be shadowed by the generated code. ``tests/test_userblocks.py`` renders
#: modules and checks that every identifier a user name could meet (in the functions that take
#: hyperparameters or state, in init_state, and the parameters of functions taking **hyper) is
#: covered by this set or :data:`KERNEL_PATTERNS`: a template change that adds a local fails it.
KERNEL_NAMES = frozenset({
    # module globals the kernels and wrappers read
    "math", "numba", "np", "SPEC", "SPEC_HASH", "PARAM_NAMES", "HYPER", "STATE_NAMES", "SCALAR_STATE", "INIT",
    "MODELS", "forward", "loss", "gradients", "step", "train", "permutations", "init_params", "init_state",
    "DROPOUT", "REGISTER_Z", "INIT_SCHEMES", "train_many", "llvmlite", "HYPER_RANGES", "RUNTIME",
    # kernel arguments and locals
    "X", "Y", "Xb", "Yb", "xs", "ys", "P", "Q", "G", "N", "B", "L", "R", "nb", "n", "e", "b", "s", "r", "row", "i",
    "j", "k",
    "p", "q", "gr", "theta", "g", "t", "t0", "epoch", "epoch0", "epochs", "batch", "batch_size", "shuffle", "seed",
    "perm", "history", "flip", "value", "total", "ell", "scale", "clip_coef", "grad_norm", "lr_t", "status",
    "steps", "delta", "out", "drop", "acc", "track", "l", "gnorm", "grad_norms", "results",
    # train_many's stacked arrays and arguments
    "Xbs", "Ybs", "perms", "historys", "gnorms", "seeds", "states", "params_list",
    # locals of init_state (initial values of state read hyperparameters into locals there) and
    # the parameters of the public functions (hyperparameters are their keyword arguments)
    "arrays", "values", "state", "pname", "arr", "params", "hyper",
    # the kernel helpers' typing and lowering functions (derive/kernel_runtime.py)
    "fn", "typer", "lower", "arg_types", "context", "builder", "signature", "args", "src", "dst", "x", "v",
    "factors",
    # constants and variables of the expression language
    "pi", "yhat", "z", "a", "y",
}) | frozenset(dir(builtins)) | frozenset(FUNCTIONS)
#: Patterns of generated names: per-layer arrays and symbols, per-parameter state arrays,
#: state buffers inside the update kernel, output buffers.
KERNEL_PATTERNS = (
    re.compile(r"^(W|b|Z|A|D|E|H|M|gW|gb|z_|a_|e_|h_|m_|delta_|n_|Delta_)\d+s?$"),
    re.compile(r"^[sSrR]_"),
    re.compile(r"_(W|b)\d+(_out)?s?$"),
    re.compile(r"_(out|state|state_out|outs|states|state_outs)$"),
    re.compile(r"^_"),
)
#: Activation parameters become SymPy symbols next to the element symbols of the derivation.
PARAM_RESERVED = frozenset({"z", "a", "y", "yhat", "e", "pi", "n", "N", "L", "delta", "ell", "A", "Z", "W", "b",
                            "D", "E", "Delta", "h", "m", "H", "M"}) | frozenset(FUNCTIONS)


def _identifier(name: object, where: str, what: str) -> str:
    check_name(name, where, what)
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(f"{what} name {name[:20]!r}... is too long (at most {MAX_NAME_LENGTH} characters)", where)
    return name


def check_kernel_name(name: object, where: str, what: str) -> str:
    """A hyperparameter, state variable or temporary of a user optimizer: an identifier that
    no generated kernel or wrapper already uses."""
    _identifier(name, where, what)
    if name in KERNEL_NAMES or any(p.search(name) for p in KERNEL_PATTERNS):
        raise SpecError(f"{what} name {name!r} is reserved: the generated kernels use it (or names of its "
                        "form) for their own arguments, locals or functions; choose another name", where)
    return name


def check_param_name(name: object, where: str) -> str:
    """A parameter of a user activation: an identifier other than the derivation's symbols."""
    _identifier(name, where, "parameter")
    if name in PARAM_RESERVED:
        raise SpecError(f"parameter name {name!r} is reserved (a symbol of the derivation or a function "
                        "of the expression language); choose another name", where)
    return name


# ----------------------------------------------------------------------------- numbers


class _KernelMath:
    """``math`` as the kernels see it (Numba, ``error_model="numpy"``): overflow gives inf, a
    domain error gives nan, nothing raises. Used to evaluate printed kernel expressions."""

    _NUMPY = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "tanh": np.tanh, "sinh": np.sinh,
              "cosh": np.cosh, "sin": np.sin, "cos": np.cos, "tan": np.tan, "atan": np.arctan, "asin": np.arcsin,
              "acos": np.arccos, "atanh": np.arctanh, "asinh": np.arcsinh, "acosh": np.arccosh, "floor": np.floor,
              "ceil": np.ceil, "expm1": np.expm1, "fabs": np.fabs}

    pi = math.pi
    e = math.e
    inf = math.inf

    def __getattr__(self, name: str):
        if name in self._NUMPY:
            return self._NUMPY[name]
        fn = getattr(math, name)

        def wrapped(*args):
            try:
                return np.float64(fn(*(float(x) for x in args)))
            except OverflowError:
                return np.float64(math.inf)
            except (ValueError, ZeroDivisionError):
                return np.float64(math.nan)

        return wrapped


_KERNEL_MATH = _KernelMath()


def kernel_function(expr: sp.Basic, symbols: Sequence[sp.Symbol]) -> Callable[..., float]:
    """``expr`` as the kernel printer prints it, evaluated with the kernels' float semantics.

    The code is printed from a SymPy object (never from spec text) by the same printer as the
    generated modules; arguments are float64 scalars.
    """
    from .codegen.printer import VECTOR_MATH, KernelPrinter

    fn = sp.lambdify(list(symbols), expr, modules=[{"math": _KERNEL_MATH, **VECTOR_MATH}], printer=KernelPrinter)

    def call(*args: float) -> float:
        with np.errstate(all="ignore"):
            try:
                value = fn(*(np.float64(x) for x in args))
            except (ZeroDivisionError, OverflowError, ValueError, TypeError):
                return math.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    return call


def _exact_function(expr: sp.Basic, symbols: Sequence[sp.Symbol]) -> Callable[..., float | None]:
    """``expr`` evaluated with mpmath (no overflow): the mathematical value, None if not real."""
    import mpmath

    fn = sp.lambdify(list(symbols), expr, modules="mpmath")

    def call(*args: float) -> float | None:
        try:
            with mpmath.workdps(30):
                value = fn(*(mpmath.mpf(x) for x in args))
            if isinstance(value, mpmath.mpc):
                if abs(value.imag) > 1e-20 * max(1, abs(value.real)):
                    return None
                value = value.real
            return float(value) if mpmath.isfinite(value) else None
        except (ZeroDivisionError, OverflowError, ValueError, TypeError):
            return None

    return call


def _fmt(x: float) -> str:
    return f"{x:g}"


def _first_bad(fn: Callable[..., float], points: Sequence[tuple[float, ...]]) -> tuple[tuple[float, ...], float] | None:
    for point in points:
        value = fn(*point)
        if not math.isfinite(value):
            return point, value
    return None


def _describe_value(value: float) -> str:
    return "not a real number (nan)" if math.isnan(value) else f"infinite ({value})"


# ----------------------------------------------------------------------------- time limit


class _Timeout(BaseException):  # noqa: N818 (a BaseException: SymPy's `except Exception` must not swallow it)
    pass


@contextlib.contextmanager
def time_limit(seconds: float, what: str, where: str) -> Iterator[None]:
    """Raise SpecError if the body runs longer than ``seconds`` (SIGALRM; main thread only —
    elsewhere, or when a timer is already set, the body runs unbounded)."""
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
              and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None))
    if not usable:
        yield
        return
    armed = [True]

    def handler(signum, frame):
        if armed[0]:
            raise _Timeout

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise SpecError(f"deriving {what} took longer than {seconds:g} s; simplify the expression", where) from None
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Declaration:
    """One user block: its rule, where it was declared, a canonical signature (two
    declarations with equal signatures define the same block) and its plain data."""

    kind: str
    name: str
    where: str  # the prefix of messages: "spec.toml:3: activation 'swish'"
    rule: object
    signature: tuple
    data: dict = field(compare=False)

    @property
    def location(self) -> str:
        """Where it was declared: "spec.toml:3" (the file, and the line when known)."""
        return _location(self.where, self.kind)


def _location(where: str, kind: str) -> str:
    return where.rsplit(f": {kind} ", 1)[0]


#: (kind, name) -> the declaration registered under it in this process.
DECLARED: dict[tuple[str, str], Declaration] = {}


def _registry(kind: str) -> dict:
    return {"activation": activations.REGISTRY, "loss": losses.REGISTRY, "optimizer": optimizers.REGISTRY}[kind]


def _aliases(kind: str) -> Mapping[str, str]:
    return {"activation": activations.ALIASES, "loss": losses.ALIASES}.get(kind, {})


def declared(kind: str, name: str) -> Declaration | None:
    """The user declaration of ``name`` (None for built-in and Python-API blocks)."""
    return DECLARED.get((kind, name))


def _table(body: object, keys: Sequence[str], where: str, what: str) -> dict:
    if not isinstance(body, Mapping):
        raise SpecError(f"{what} must be a table, got {body!r}", where)
    unknown = sorted(set(body) - set(keys))
    if unknown:
        raise SpecError(f"{what} has no key {unknown[0]!r}{suggest(unknown[0], keys)}", where)
    return dict(body)


def _number(value: object, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"must be a number, got {value!r}", where)
    v = float(value)
    if not math.isfinite(v) or abs(v) > 1e300:
        raise SpecError(f"must be a finite number, got {value!r}", where)
    if positive and v <= 0:
        raise SpecError(f"must be positive (parameters are positive symbols), got {value!r}", where)
    return v


def _size(expr: sp.Basic) -> int:
    return sum(1 for _ in sp.preorder_traversal(expr))


def _parse(text: object, variables: Mapping[str, sp.Symbol], where: str) -> sp.Expr:
    if not isinstance(text, str):
        raise SpecError(f"must be an expression in a string, got {text!r}", where)
    expr = parse(text, variables, where=where)
    if _size(expr) > MAX_BLOCK_SIZE:
        raise SpecError(f"expression is too large for a block ({_size(expr)} nodes once built; the limit is "
                        f"{MAX_BLOCK_SIZE})", where)
    return expr


def _relational_atoms(*exprs: sp.Basic) -> list[sp.Basic]:
    atoms = set()
    for e in exprs:
        for pw in e.atoms(sp.Piecewise):
            for _, cond in pw.args:
                atoms |= cond.atoms(sp.core.relational.Relational)
    return sorted(atoms, key=sp.default_sort_key)


def kinks(f: sp.Expr, df: sp.Expr, var: sp.Symbol, grid: Sequence[float],
          fixed: Mapping[sp.Symbol, float]) -> list[tuple[float, str]]:
    """Points of ``grid``'s range where a branch of ``f`` or ``df`` switches and ``f`` jumps
    ("discontinuous") or ``df`` jumps ("not differentiable"), with ``fixed`` values for the
    other symbols. Found by bisecting between grid points where a condition flips."""
    rels = _relational_atoms(f, df)
    if not rels:
        return []
    others = list(fixed)
    syms = [var, *others]
    vals = [fixed[s] for s in others]
    conds = [sp.lambdify(syms, r, modules="math") for r in rels]

    def signature(x: float) -> tuple:
        out = []
        for c in conds:
            try:
                out.append(bool(c(x, *vals)))
            except (TypeError, ValueError, ZeroDivisionError, OverflowError):
                out.append(None)
        return tuple(out)

    fn, dfn = kernel_function(f, syms), kernel_function(df, syms)
    found: list[tuple[float, str]] = []
    sigs = [signature(x) for x in grid]
    for (x0, s0), (x1, s1) in zip(zip(grid, sigs), zip(grid[1:], sigs[1:])):
        if s0 == s1:
            continue
        lo, hi = x0, x1
        for _ in range(200):
            mid = (lo + hi) / 2
            if mid in (lo, hi):
                break
            if signature(mid) == s0:
                lo = mid
            else:
                hi = mid
        f0, f1, d0, d1 = fn(lo, *vals), fn(hi, *vals), dfn(lo, *vals), dfn(hi, *vals)
        at = round((lo + hi) / 2, 9) + 0.0
        if not all(map(math.isfinite, (f0, f1, d0, d1))):
            continue  # reported by the finiteness checks
        if abs(f0 - f1) > 1e-6 * max(1.0, abs(f0), abs(f1)):
            found.append((at, f"discontinuous at {var} ≈ {_fmt(at)}: it jumps from {_fmt(f0)} to {_fmt(f1)} "
                              "and the derivative ignores the jump"))
        elif abs(d0 - d1) > 1e-6 * max(1.0, abs(d0), abs(d1)):
            found.append((at, f"not differentiable at {var} ≈ {_fmt(at)}: its derivative jumps from {_fmt(d0)} to "
                              f"{_fmt(d1)} (the kernel uses one side's value there)"))
    return found


# ----------------------------------------------------------------------------- activations


def _activation_rule(name: str, f: sp.Expr, params: dict[str, float], where: str) -> activations.ActivationRule:
    syms = {p: sp.Symbol(p, positive=True) for p in params}

    def build(z_arg: sp.Expr, **given: sp.Expr) -> sp.Expr:
        return f.xreplace({z: z_arg, **{syms[k]: v for k, v in given.items()}})

    return activations.ActivationRule(
        name, build, {p: activations.Param(v, 0.0, math.inf, "user-defined parameter (positive)")
                      for p, v in params.items()},
        doc=f"user-defined: f(z) = {sp.sstr(f)}", declared=_location(where, "activation"))


def _param_sets(rule: activations.ActivationRule, values: Mapping[str, float] | None = None) -> list[dict]:
    """Parameter values to try: the given ones, or the defaults and the derivation's samples."""
    syms = rule.symbols()
    if values is not None:
        return [{syms[k]: v for k, v in values.items()}]
    sets = [{syms[k]: p.default for k, p in rule.params.items()}]
    for sample in PARAM_SAMPLES:
        sets.append({s: sample for s in syms.values()})
    return sets if syms else sets[:1]


def check_activation_values(rule: activations.ActivationRule, where: str,
                            values: Mapping[str, float] | None = None) -> None:
    """f and f' finite and real on :data:`Z_GRID` (for these parameter values, or the defaults
    and the sample values every rewriting is checked at); SpecError naming the point."""
    f = rule.expr()
    df = sp.diff(f, z)
    for i, fixed in enumerate(_param_sets(rule, values)):
        syms = [z, *fixed]
        at_params = "".join(f", {s} = {_fmt(v)}" for s, v in fixed.items())
        for what, expr in (("f(z)", f), ("its derivative", df)):
            bad = _first_bad(kernel_function(expr, syms), [(x, *fixed.values()) for x in Z_GRID])
            if bad:
                raise SpecError(f"{what} is {_describe_value(bad[1])} at z = {_fmt(bad[0][0])}{at_params}; an "
                                "activation must be finite and real for every z (e.g. log(z) and 1/z are not)",
                                where)
        derivative = kernel_function(df, syms)
        if i == 0 and all(derivative(x, *fixed.values()) == 0.0 for x in Z_GRID):
            raise SpecError("its derivative is zero everywhere: no gradient can flow through it", where)


def declare_activation(name: object, body: object, where: str) -> Declaration:
    """Validate ``[activation.NAME]``: ``expr`` in z (and parameters), optional ``params``."""
    _identifier(name, where, "activation")
    table = _table(body, ACTIVATION_KEYS, where, f"[activation.{name}]")
    if "expr" not in table:
        raise SpecError("missing key 'expr' (the activation as an expression of z, e.g. \"z * sigmoid(z)\")", where)
    given = table.get("params", {})
    if not isinstance(given, Mapping):
        raise SpecError(f"params must be a table such as {{ beta = 1.0 }}, got {given!r}", f"{where}: params")
    if len(given) > MAX_PARAMS:
        raise SpecError(f"at most {MAX_PARAMS} parameters", f"{where}: params")
    params = {check_param_name(k, f"{where}: params"): _number(v, f"{where}: params: {k}", positive=True)
              for k, v in given.items()}
    syms = {p: sp.Symbol(p, positive=True) for p in params}
    f = _parse(table["expr"], {"z": z, **syms}, f"{where}: expr")
    if z not in f.free_symbols:
        raise SpecError("expr does not depend on z: an activation is a function of the pre-activation z",
                        f"{where}: expr")
    unused = sorted(set(params) - {s.name for s in f.free_symbols})
    if unused:
        raise SpecError(f"parameter {unused[0]!r} is not used in expr", f"{where}: params")
    rule = _activation_rule(name, f, params, where)
    check_activation_values(rule, where)
    df = sp.diff(f, z)
    for _, text in kinks(f, df, z, Z_GRID, {syms[p]: v for p, v in params.items()}):
        warnings.warn(f"{where}: {text}", SpecWarning, stacklevel=2)
    data = {"expr": table["expr"], **({"params": params} if params else {})}
    signature = ("activation", sp.srepr(f), tuple(sorted(params.items())))
    return Declaration("activation", name, where, rule, signature, data)


# ----------------------------------------------------------------------------- losses


def _loss_points(needs_range: tuple[float, float] | None) -> list[tuple[float, float]]:
    if needs_range is None:
        return [(p, t) for t in (-3.0, *Y_SAMPLES, 2.5) for p in FREE_GRID]
    lo, hi = needs_range
    width = hi - lo
    preds = [lo + width * q for q in (1e-3, 0.01, 0.05, 0.1, 0.25, 0.37, 0.5, 0.63, 0.75, 0.9, 0.95, 0.99, 0.999)]
    targets = [lo, lo + 0.31 * width, lo + 0.5 * width, hi]
    return [(p, t) for t in targets for p in preds]


def declare_loss(name: object, body: object, where: str) -> Declaration:
    """Validate ``[loss.NAME]``: ``expr`` in yhat and y, optional ``needs_range`` and ``log_floor``."""
    _identifier(name, where, "loss")
    table = _table(body, LOSS_KEYS, where, f"[loss.{name}]")
    if "expr" not in table:
        raise SpecError("missing key 'expr' (the per-element loss of the prediction yhat and the target y)", where)
    needs_range = None
    if "needs_range" in table:
        rng = table["needs_range"]
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise SpecError(f"needs_range must be [low, high], got {rng!r}", f"{where}: needs_range")
        lo, hi = (_number(v, f"{where}: needs_range") for v in rng)
        if not lo < hi:
            raise SpecError(f"needs_range must have low < high, got {rng!r}", f"{where}: needs_range")
        needs_range = (lo, hi)
    log_floor = None
    if "log_floor" in table:
        log_floor = _number(table["log_floor"], f"{where}: log_floor")
    yhat = losses.yhat
    ell = _parse(table["expr"], {"yhat": yhat, "y": y}, f"{where}: expr")
    for sym, what in ((yhat, "the prediction yhat"), (y, "the target y")):
        if sym not in ell.free_symbols:
            raise SpecError(f"expr does not use {what}: a loss compares yhat with y", f"{where}: expr")
    d_ell = sp.diff(ell, yhat)
    points = _loss_points(needs_range)
    inside = f" for yhat inside ({_fmt(needs_range[0])}, {_fmt(needs_range[1])})" if needs_range else ""
    for what, expr in (("the loss", ell), ("its derivative in yhat", d_ell)):
        bad = _first_bad(kernel_function(expr, [yhat, y]), points)
        if bad:
            (p, t), value = bad
            hint = "" if needs_range else " (declare needs_range = [low, high] if predictions are bounded)"
            raise SpecError(f"{what} is {_describe_value(value)} at yhat = {_fmt(p)}, y = {_fmt(t)}; a loss must be "
                            f"finite and real{inside or ' for every prediction'}{hint}", where)
    grid = sorted({p for p, _ in points})
    for t in sorted({t for _, t in points}):
        found = kinks(ell, d_ell, yhat, grid, {y: t})
        if found:  # one warning per loss: the first target value with a kink
            warnings.warn(f"{where}: at y = {_fmt(t)}, " + "; ".join(text for _, text in found), SpecWarning,
                          stacklevel=2)
            break
    rule = losses.LossRule(name, ell, f"user-defined: {sp.sstr(ell)}", needs_range, log_floor,
                           declared=_location(where, "loss"))
    data = {"expr": table["expr"], **({"needs_range": list(needs_range)} if needs_range else {}),
            **({"log_floor": log_floor} if log_floor is not None else {})}
    signature = ("loss", sp.srepr(ell), needs_range, log_floor)
    return Declaration("loss", name, where, rule, signature, data)


# ----------------------------------------------------------------------------- optimizers


def _hyper(name: str, value: object, where: str) -> optimizers.Hyper:
    if isinstance(value, Mapping):
        table = _table(value, HYPER_KEYS, where, f"hyperparameter {name!r}")
        if "default" not in table:
            raise SpecError("a hyperparameter table needs a default, e.g. { default = 0.9, min = 0, max = 1 }", where)
        default = _number(table["default"], f"{where}: default")
        low = _number(table["min"], f"{where}: min") if "min" in table else -math.inf
        high = _number(table["max"], f"{where}: max") if "max" in table else math.inf
        if name == "lr":
            low = max(low, 0.0)
        hyper = optimizers.Hyper(default, low, high, low_open=name == "lr" and low == 0.0, high_open=False,
                                 doc="user-defined")
    else:
        default = _number(value, where)
        hyper = optimizers.Hyper(default, 0.0, math.inf, doc="learning rate (positive)") if name == "lr" else \
            optimizers.Hyper(default, doc="user-defined")
    hyper.check(hyper.default, where)
    return hyper


def _simulate(eqs: optimizers.Equations, hyper: Mapping[str, float], where: str) -> None:
    """Run STEPS steps at every sample (theta, g) pair with the kernels' float semantics; a
    non-finite parameter, state or temporary is a SpecError naming the point."""
    env_syms = [optimizers.theta, optimizers.g, optimizers.t, *(optimizers.H(k) for k in hyper),
                *(optimizers.S(k) for k in eqs.state)]
    temps = [tg for tg, _ in eqs.updates if tg != "theta" and tg not in eqs.state]
    env_syms += [optimizers.S(k) for k in dict.fromkeys(temps)]
    inits = [(k, kernel_function(v, [optimizers.H(h) for h in hyper])) for k, v in eqs.state.items()]
    fns = [(tg, kernel_function(rhs, env_syms)) for tg, rhs in eqs.updates]
    names = ["theta", "g", "t", *hyper, *eqs.state, *dict.fromkeys(temps)]
    hyper_at = ", ".join(f"{k} = {_fmt(v)}" for k, v in hyper.items())
    for theta0 in THETA_SAMPLES:
        for g0 in G_SAMPLES:
            env = dict.fromkeys(names, 0.0)
            env.update(theta=theta0, g=g0, **hyper)
            for k, fn in inits:
                env[k] = fn(*hyper.values())
                if not math.isfinite(env[k]):
                    raise SpecError(f"the initial value of state {k!r} is {_describe_value(env[k])} at {hyper_at}",
                                    where)
            for step in range(1, STEPS + 1):
                env["t"] = float(step)
                for target, fn in fns:
                    value = fn(*(env[n] for n in names))
                    if not math.isfinite(value):
                        raise SpecError(
                            f"update of {target!r} gives {_describe_value(value)} at step t = {step} with "
                            f"theta = {_fmt(theta0)} and g = {_fmt(g0)} at every step ({hyper_at}); a NaN or inf "
                            "would spread into every parameter (add an eps, or guard the division)", where)
                    env[target] = value


def _updates(value: object, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError('update must be a non-empty list of ["target", "expression"] pairs, e.g. '
                        '[["theta", "theta - lr*g"]]', where)
    if len(value) > MAX_UPDATES:
        raise SpecError(f"at most {MAX_UPDATES} update equations", where)
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise SpecError(f'update[{i}] must be ["target", "expression"], got {pair!r}', where)
        pairs.append((pair[0], pair[1]))
    return pairs


def declare_optimizer(name: object, body: object, where: str) -> Declaration:
    """Validate ``[optimizer.NAME]``: ``hyper`` (with ``lr``), ``state`` and ordered ``update``."""
    _identifier(name, where, "optimizer")
    table = _table(body, OPTIMIZER_KEYS, where, f"[optimizer.{name}]")
    for key in ("hyper", "update"):
        if key not in table:
            raise SpecError(f"missing key {key!r}", where)
    given = table["hyper"]
    if not isinstance(given, Mapping) or "lr" not in given:
        raise SpecError("hyper must be a table of hyperparameters with their defaults that includes the learning "
                        "rate lr (schedules and decoupled weight decay scale it), e.g. { lr = 0.01 }",
                        f"{where}: hyper")
    if len(given) > MAX_HYPER:
        raise SpecError(f"at most {MAX_HYPER} hyperparameters", f"{where}: hyper")
    hyper = {check_kernel_name(k, f"{where}: hyper", "hyperparameter"): _hyper(k, v, f"{where}: hyper: {k}")
             for k, v in given.items()}
    hyper_data = {k: (h.default if not isinstance(given[k], Mapping) else
                      {key: float(given[k][key]) for key in HYPER_KEYS if key in given[k]}) for k, h in hyper.items()}
    state_given = table.get("state", {})
    if not isinstance(state_given, Mapping):
        raise SpecError(f"state must be a table of initial values such as {{ m = 0 }}, got {state_given!r}",
                        f"{where}: state")
    if len(state_given) > MAX_STATE:
        raise SpecError(f"at most {MAX_STATE} state variables", f"{where}: state")
    hyper_vars = {k: optimizers.H(k) for k in hyper}
    state: dict[str, sp.Expr] = {}
    for k, v in state_given.items():
        check_kernel_name(k, f"{where}: state", "state variable")
        if k in hyper:
            raise SpecError(f"{k!r} is both a hyperparameter and a state variable", f"{where}: state")
        if isinstance(v, str):
            state[k] = _parse(v, hyper_vars, f"{where}: state: {k}")
        else:
            state[k] = sp.Rational(repr(_number(v, f"{where}: state: {k}")))
    variables: dict[str, sp.Symbol] = {"theta": optimizers.theta, "g": optimizers.g, "t": optimizers.t,
                                       **hyper_vars, **{k: optimizers.S(k) for k in state}}
    updates = []
    for i, (target, text) in enumerate(_updates(table["update"], f"{where}: update")):
        at = f"{where}: update[{i}] ({target})"
        if target in ("g", "t") or target in hyper:
            raise SpecError(f"{target!r} cannot be assigned: g, t and hyperparameters are inputs of the update",
                            at)
        if target != "theta":
            check_kernel_name(target, at, "temporary" if target not in state else "state variable")
        rhs = _parse(text, variables, at)
        updates.append((target, rhs))
        variables.setdefault(target, optimizers.theta if target == "theta" else optimizers.S(target))
    targets = [tg for tg, _ in updates]
    if "theta" not in targets:
        raise SpecError('no equation updates "theta" (the parameter)', f"{where}: update")
    never = [k for k in state if k not in targets]
    if never:
        raise SpecError(f"state {never[0]!r} is never updated (a constant belongs in hyper)", f"{where}: state")
    used = set().union(*(rhs.free_symbols for _, rhs in updates), *(v.free_symbols for v in state.values()))
    unused = [k for k in hyper if hyper_vars[k] not in used and k != "lr"]
    if unused:
        warnings.warn(f"{where}: optimizer {name!r}: hyperparameter {unused[0]!r} is not used", SpecWarning,
                      stacklevel=2)
    eqs = optimizers.Equations(hyper, tuple(updates), state)
    _simulate(eqs, {k: h.default for k, h in hyper.items()}, where)
    doc = f"User-defined optimizer {name}: " + "; ".join(f"{tg} <- {sp.sstr(rhs)}" for tg, rhs in updates) + "."
    rule = optimizers.OptimizerRule(name, lambda: eqs, {}, doc, declared=_location(where, "optimizer"))
    data = {"hyper": hyper_data,
            "state": {k: (state_given[k] if isinstance(state_given[k], str) else float(state_given[k]))
                      for k in state},
            "update": [list(p) for p in _updates(table["update"], where)]}
    signature = ("optimizer", tuple((k, h.default, h.low, h.high, h.low_open, h.high_open) for k, h in hyper.items()),
                 tuple((k, sp.srepr(v)) for k, v in state.items()), tuple((tg, sp.srepr(r)) for tg, r in updates))
    return Declaration("optimizer", name, where, rule, signature, data)


# ----------------------------------------------------------------------------- registration


_DECLARE = {"activation": declare_activation, "loss": declare_loss, "optimizer": declare_optimizer}


def declare(kind: str, name: object, body: object, where: str) -> Declaration:
    """Validate one user block (nothing is registered); every failure is a SpecError."""
    _identifier(name, where, kind)
    builtin = (name in _registry(kind) and (kind, name) not in DECLARED) or name in _aliases(kind)
    if builtin:
        raise SpecError(f"{kind} {name!r} is built in (or declared through the Python API); a spec file "
                        "cannot redefine it: choose another name", where)
    try:
        with time_limit(TIME_LIMIT, f"{kind} {name!r}", where):
            return _DECLARE[kind](name, body, where)
    except (SpecError, Warning):
        raise
    except RecursionError:
        raise SpecError("the expression nests too deeply to differentiate", where) from None
    except Exception as exc:  # noqa: BLE001 (SymPy raises many kinds on unusual input)
        raise SpecError(f"cannot use this {kind} ({type(exc).__name__}: {exc})", where) from None


def register(decls: Sequence[Declaration]) -> list[Declaration]:
    """Register ``decls`` all or none; returns those that were not registered before.

    A name already declared with an equal signature is kept (idempotent); a different
    definition, or a built-in name (or alias), is a SpecError.
    """
    new = []
    for d in decls:
        known = DECLARED.get((d.kind, d.name))
        if known is not None:
            if known.signature != d.signature:
                raise SpecError(f"this name is already declared differently, at {known.location}; a name keeps one "
                                "definition per process, so rename one of them", d.where)
            continue
        if d.name in _registry(d.kind) or d.name in _aliases(d.kind):
            raise SpecError(f"{d.kind} {d.name!r} is built in (or declared through the Python API); a spec file "
                            "cannot redefine it: choose another name", d.where)
        new.append(d)
    for d in new:
        DECLARED[(d.kind, d.name)] = d
        {"activation": activations.register, "loss": losses.register, "optimizer": optimizers.register}[d.kind](d.rule)
    return new


def _clear_caches() -> None:
    for fn in (activations.forms, activations._value_range, joint.output_delta_forms, joint.loss_element):
        fn.cache_clear()


def unregister(decls: Sequence[Declaration]) -> None:
    """Remove these declarations (their names may then be declared anew). The derivation
    caches keyed by activation and loss names are cleared when one of those is removed."""
    removed = []
    for d in decls:
        if DECLARED.get((d.kind, d.name)) is d:
            del DECLARED[(d.kind, d.name)]
            _registry(d.kind).pop(d.name, None)
            removed.append(d.kind)
    if {"activation", "loss"} & set(removed):
        _clear_caches()


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Undo every user-block registration made inside the block (tests, long-running tools)."""
    before = set(DECLARED)
    try:
        yield
    finally:
        unregister([d for key, d in list(DECLARED.items()) if key not in before])


def declare_all(data: Mapping[str, object], line_of: Callable[[str, str], int | None], source: str
                ) -> list[Declaration]:
    """Validate the ``[activation.*]``, ``[loss.*]`` and ``[optimizer.*]`` tables of a parsed
    TOML document (``line_of(kind, name)`` finds a table's line for messages)."""
    decls = []
    for kind in KINDS:
        tables = data.get(kind, {})
        if not isinstance(tables, Mapping):
            raise SpecError(f"'{kind}' must be a set of [{kind}.NAME] tables, got {tables!r}", source)
        for name, body in tables.items():
            line = line_of(kind, name)
            where = f"{source}:{line}" if line else source
            decls.append(declare(kind, name, body, f"{where}: {kind} {name!r}"))
    return decls


# ----------------------------------------------------------------------------- models


def used_blocks(model) -> list[tuple[str, str]]:
    """(kind, name) of every user-declared block ``model`` uses, in a stable order."""
    used = [("activation", layer.activation) for layer in model.layers]
    used += [("loss", model.loss), ("optimizer", model.optimizer.name)]
    return [key for key in dict.fromkeys(used) if key in DECLARED]


def describe_blocks(model) -> dict:
    """The user blocks of ``model`` as plain data (recorded in the generated module's SPEC)."""
    out: dict = {}
    for kind, name in used_blocks(model):
        out.setdefault(kind, {})[name] = DECLARED[(kind, name)].data
    return out


def _printable(expr: sp.Basic, what: str, where: str) -> None:
    from .codegen.printer import KernelPrinter

    try:
        KernelPrinter().doprint(expr)
    except Exception as exc:  # noqa: BLE001
        raise SpecError(f"{what} cannot be printed as kernel code ({type(exc).__name__}: {exc})", where) from None


def _extremes(name: str, forms: activations.ActivationForms, params: Mapping[sp.Symbol, float], where: str) -> None:
    """Warn where the activation's kernel forms are NaN/inf far out although the exact values are finite."""
    f_kernel = kernel_function(forms.f.xreplace(params), [z])
    d_kernel = kernel_function(forms.derivative.xreplace(params), [z, a])
    f_exact = _exact_function(forms.f.rewrite(sp.log).xreplace(params), [z])
    d_exact = _exact_function(forms.raw_derivative.xreplace(params), [z])
    for x in EXTREME_Z:
        fa = f_kernel(x)
        for what, got, want in (("f(z)", fa, f_exact(x)), ("its derivative", d_kernel(x, fa), d_exact(x))):
            if want is not None and not math.isfinite(got):
                warnings.warn(f"{where}: activation {name!r}: {what} as computed is {got} at z = {_fmt(x)} although "
                              f"its exact value is finite ({want:.6g}): an intermediate overflows; inputs that large "
                              "will give NaN/inf gradients", SpecWarning, stacklevel=3)
                return


def check_model(model, where: str) -> None:
    """Run, under :data:`TIME_LIMIT`, the SymPy work the derivation does for the user blocks of
    ``model`` (cached for the build), and check that the result can be printed and is finite
    for the model's parameter values; SpecError otherwise."""
    used = used_blocks(model)
    if not used:
        return
    names = ", ".join(f"{k} {n!r}" for k, n in used)
    seen = set()
    try:
        with time_limit(TIME_LIMIT, f"the user blocks of model {model.name!r} ({names})", where):
            for layer in model.layers:
                if ("activation", layer.activation) not in used or (layer.activation, layer.params) in seen:
                    continue
                seen.add((layer.activation, layer.params))
                rule = activations.REGISTRY[layer.activation]
                check_activation_values(rule, f"{where}: activation {layer.activation!r}", layer.param_dict)
                forms = activations.forms(layer.activation)
                for what, expr in (("f(z)", forms.f), ("the derivative", forms.derivative)):
                    _printable(expr, f"activation {layer.activation!r}: {what}", where)
                values = {rule.symbols()[k]: v for k, v in layer.params}
                _extremes(layer.activation, forms, values, where)
            out = model.layers[-1].activation
            if {("activation", out), ("loss", model.loss)} & set(used):
                *_, delta = joint.output_delta_forms(out, model.loss)
                ell, _ = joint.loss_element(out, model.loss)
                _printable(delta, f"the output delta of {model.loss}∘{out}", where)
                _printable(ell, f"the loss {model.loss} of {out}", where)
            if ("optimizer", model.optimizer.name) in used:
                eqs = optimizers.REGISTRY[model.optimizer.name].equations()
                for target, rhs in eqs.updates:
                    _printable(rhs, f"the update of {target!r}", where)
                _simulate(eqs, model.optimizer.hyper_dict, f"{where}: optimizer")
    except (SpecError, _Timeout):
        raise
    except (BuildError, DeriveError) as exc:
        raise SpecError(f"cannot derive the user blocks ({names}): {exc}", where) from None
    except RecursionError:
        raise SpecError(f"cannot derive the user blocks ({names}): the expressions nest too deeply", where) from None
    except Exception as exc:  # noqa: BLE001 (SymPy raises many kinds on unusual input)
        raise SpecError(f"cannot derive the user blocks ({names}): {type(exc).__name__}: {exc}", where) from None


__all__ = ["Declaration", "SpecWarning", "check_kernel_name", "check_model", "check_param_name", "declare",
           "declare_all", "declared", "describe_blocks", "isolated", "kernel_function", "register", "time_limit",
           "unregister", "used_blocks"]
