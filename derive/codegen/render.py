"""Render a :class:`~derive.derivation.Derivation` into a generated Python module.

The elementwise right-hand sides of the derivation are printed by :class:`KernelPrinter` (one
cse'd statement per line); the matrix equations map to fixed kernel shapes (the products
``_mm``/``_mm_tn``/``_mm_nt`` into preallocated arrays, bias and column-sum loops). The
template only arranges them.
"""

from __future__ import annotations

import hashlib
import json
import math
import pprint
import re
import textwrap
from pathlib import Path

import jinja2
import sympy as sp

from ..blocks import optimizers, softmax
from ..derivation import Derivation, Equation, dropout_rate, elem, loss_option
from ..spec import ModelSpec
from .printer import KernelPrinter, print_assignments

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
MODULE_TEMPLATE = "module.py.j2"
#: The kernel runtime: plain Python in the derive package, written verbatim beside the models.
RUNTIME_SOURCE = Path(__file__).resolve().parent.parent / "kernel_runtime.py"
#: Its file name in the output package (the model modules import it by this name).
RUNTIME_NAME = "_kernel_runtime.py"


def runtime_text() -> str:
    """The kernel runtime's source, as ``derive build`` writes it."""
    return RUNTIME_SOURCE.read_text(encoding="utf-8")


def runtime_version(text: str | None = None) -> tuple[int, str]:
    """(interface, content hash) of the runtime source: what every model module records and
    checks when it is imported (the runtime computes the same hash of its own file)."""
    text = runtime_text() if text is None else text
    abi = re.search(r"^ABI = (\d+)$", text, re.M)
    if abi is None:
        raise RuntimeError(f"{RUNTIME_SOURCE} defines no ABI = <int>")
    return int(abi.group(1)), hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

#: Default initialiser per activation: (scheme, gain) following torch.nn.init.calculate_gain.
_XAVIER_GAIN = {"tanh": 5 / 3}


def default_init(activation: str, params: dict[str, float]) -> tuple[str, float]:
    """He-uniform for the ReLU family, Xavier/Glorot-uniform (with the tanh gain) otherwise."""
    if activation == "relu":
        return ("he_uniform", math.sqrt(2.0))
    if activation == "leaky_relu":
        return ("he_uniform", math.sqrt(2.0 / (1.0 + params.get("slope", 0.01) ** 2)))
    if activation == "elu":
        return ("he_uniform", math.sqrt(2.0))
    return ("xavier_uniform", _XAVIER_GAIN.get(activation, 1.0))


def spec_hash(model: ModelSpec) -> str:
    """A short hash of the model's plain-data spec (identifies what a module was built from)."""
    blob = json.dumps(model.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def describe(eq: Equation) -> str:
    """A one-line plain-text form of an equation, for code comments."""
    arrow = " <- " if eq.kind == "update" else " = "
    return f"{eq.key}: {sp.sstr(eq.lhs)}{arrow}{sp.sstr(eq.rhs)}"


class _Emitter:
    """Prints the elementwise equations of one derivation into kernel statements."""

    def __init__(self, d: Derivation):
        self.d = d
        self.printer = KernelPrinter()
        self.values = {s: sp.Float(v) for s, v in d.activation_values.items()}

    def lines(self, lhs: str, expr: sp.Expr) -> list[str]:
        return print_assignments(lhs, expr.xreplace(self.values), self.printer)

    def _sources(self, expr: sp.Expr, l: int, skip) -> list[tuple[sp.Symbol, str]]:
        table = {elem("z", l): f"Z{l}", elem("a", l): f"A{l}", elem("m", l): f"M{l}", sp.Symbol("y", real=True): "Y"}
        free = expr.free_symbols
        return [(s, arr) for s, arr in table.items() if s in free and s.name not in skip]

    def views(self, expr: sp.Expr, l: int, skip=()) -> list[str]:
        """1-D views (``_z2 = _flat(Z2)``) of the layer's arrays whose elements ``expr`` reads:
        element loops run over k in range(N * n_l), which LLVM vectorises even for n_l = 1."""
        return [f"_{arr.lower()} = _flat({arr})" for _, arr in self._sources(expr, l, skip)]

    def loads(self, expr: sp.Expr, l: int, skip=()) -> list[str]:
        """Statements reading the element symbols ``expr`` uses, element k of the views."""
        return [f"{s.name} = _{arr.lower()}[k]" for s, arr in self._sources(expr, l, skip)]


def hoist(exprs: list[sp.Expr], element: set[sp.Symbol]) -> tuple[list[sp.Expr], dict[sp.Expr, sp.Symbol]]:
    """Replace every maximal sub-expression free of per-element symbols by a temporary ``_h<i>``
    (computed once per call, outside the element loop): bias corrections, scheduled rates."""
    table: dict[sp.Expr, sp.Symbol] = {}

    def temp(e: sp.Expr) -> sp.Symbol:
        if e not in table:
            table[e] = sp.Symbol(f"_h{len(table)}", real=True)
        return table[e]

    def visit(e):
        if e.is_Atom or isinstance(e, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)):
            return e
        if not (e.free_symbols & element):
            return temp(e)
        if isinstance(e, (sp.Add, sp.Mul)):
            scalar = [x for x in e.args if not (x.free_symbols & element)]
            rest = [x for x in e.args if x.free_symbols & element]
            if len(scalar) >= 2 or (len(scalar) == 1 and not scalar[0].is_Atom):
                return e.func(temp(e.func(*scalar)), *[visit(x) for x in rest])
        if isinstance(e, sp.Piecewise):
            return sp.Piecewise(*[(visit(x), c) for x, c in e.args])
        return e.func(*[visit(x) for x in e.args])

    return [visit(e) for e in exprs], table


def _hyper_ranges(hyper: dict) -> str:
    """HYPER_RANGES of a module: (low, low open, high, high open, as text) of each bounded hyperparameter."""
    def bound(x: float) -> str:
        return "math.inf" if x == float("inf") else "-math.inf" if x == float("-inf") else repr(x)

    items = [f"{k!r}: ({bound(h.low)}, {h.low_open}, {bound(h.high)}, {h.high_open}, {h.describe()!r})"
             for k, h in hyper.items() if h.low != float("-inf") or h.high != float("inf")]
    return "{" + ", ".join(items) + "}"


def render_module(d: Derivation) -> str:
    """The source text of ``generated/<model>.py`` (deterministic for the same derivation)."""
    model = d.model
    L = model.depth
    em = _Emitter(d)
    rule_eqs = d.optimizer_equations

    P = list(model.param_names())
    G = [f"g{p}" for p in P]
    drops = [l for l in range(1, L + 1) if dropout_rate(model, l)]
    ZA = [x for l in range(1, L + 1) for x in (f"Z{l}", f"A{l}") + ((f"H{l}", f"M{l}") if l in drops else ())]
    DROP = ["drop"] if drops else []
    D = [f"D{l}" for l in range(1, L + 1)]
    H = list(model.hyper())
    ST = [f"{sname}_{p}" for sname in rule_eqs.state for p in P]
    SC = [f"{n}_state" for n in rule_eqs.scalar_state]

    def out(names: list[str]) -> list[str]:
        return [f"{n}_out" for n in names]

    args = {
        "forward": ["X", *P, *ZA, *DROP],
        "backward": ["X", "Y", *P, *ZA, *D, *G],
        "update": [*P, *out(P), *G, *ST, *out(ST), *SC, *out(SC), "t", "epoch", *H],
        "batch": ["X", "Y", *P, *out(P), *ZA, *DROP, *D, *G, *ST, *out(ST), *SC, *out(SC), "t", "epoch", *H],
        "step": ["X", "Y", *P, *ZA, *DROP, *D, *G, *ST, *SC, "t", "epoch", *H],
        "train": ["X", "Y", *P, *out(P), *ZA, *D, *G, *ST, *out(ST), *SC, *out(SC), "Xb", "Yb", "perm",
                  "history", "gnorm", "epochs", "batch_size", "shuffle", "seed", "t0", "epoch0", *H],
    }
    # _train_many: every array that belongs to one run gets a leading run axis (name + "s"), and
    # so does every hyperparameter: each run has its own values (lrs[k], ...), after `results`.
    shared = {"X", "Y", "epochs", "batch_size", "shuffle", "t0", "epoch0"}
    args["many"] = ([n if n in shared else f"{n}s" for n in args["train"] if n not in H] + ["results"]
                    + [f"{h}s" for h in H])
    many_call = ", ".join(n if n in shared else f"{n}s[k]" for n in args["train"])
    py = {"X": "X", "Y": "Y"}
    py.update({p: f"arrays[{i}]" for i, p in enumerate(P)})
    py.update({f"{p}_out": f"outs[{i}]" for i, p in enumerate(P)})
    py.update({gp: f"grads[{i}]" for i, gp in enumerate(G)})
    py.update({name: f"state[{name!r}]" for name in ST})
    py.update({f"{name}_out": f"state_out[{name!r}]" for name in ST})
    py.update({f"{n}_state": f"state[{n!r}]" for n in rule_eqs.scalar_state})
    py.update({f"{n}_state_out": f"state_out[{n!r}]" for n in rule_eqs.scalar_state})
    py.update({k: k for k in ("t", "epoch", "Xb", "Yb", "perm", "history", "gnorm", "epochs", "batch_size", "seed",
                              "t0", "drop")})
    py.update({"shuffle": "bool(shuffle)", "epoch0": "epoch0"})
    for l in range(1, L + 1):
        py.update({f"Z{l}": f"Zs[{l - 1}]", f"A{l}": f"As[{l - 1}]", f"D{l}": f"Ds[{l - 1}]",
                   f"H{l}": f"Hs[{l - 1}]", f"M{l}": f"Ms[{l - 1}]"})

    def code(n: str) -> str:
        """The argument code of a kernel argument (derive/kernel_runtime.py, _ARGS)."""
        base = n[:-4] if n.endswith("_out") else n
        if base in ("t", "epoch", "drop"):
            return "i"
        if base in H:
            return "d"
        if base in [f"{c}_state" for c in rule_eqs.scalar_state]:
            return "d1"
        last = base.split("_")[-1] if base not in ("X", "Y") else base
        if last.startswith("g") and last[1:] in P:
            last = last[1:]
        return "f1" if last in P and last.startswith("b") else "f2"

    batch_codes = " ".join(code(n) for n in args["batch"])
    kernel_codes = {kind: " ".join(code(n) for n in args[kind]) for kind in ("forward", "backward", "update")}

    def call(kind: str) -> str:
        names = [("1" if kind == "step" else "0") if n == "drop" else py[n] for n in args[kind] if n not in H]
        return ", ".join(names + (["*hv"] if kind in ("update", "step", "train") and H else []))

    # _step is _batch_step in place: each *_out buffer is its input buffer.
    in_place = {f"{n}_out": n for n in [*P, *ST, *SC]}
    step_batch_call = ", ".join(in_place.get(n, n) for n in args["batch"])
    # _train alternates the buffers and passes views of the first r rows of the workspaces; xs, ys
    # are the batch's rows (gathered into Xb, Yb when shuffling, else a slice of X, Y). Two call
    # sites of _batch_step, one per direction: it is called through a symbol (not linked in), so
    # each is one call instruction (choosing the buffers first, by a select per array, took
    # LLVM 0.2 s more to optimise for Adam's 18 buffers).
    buffered = [*P, *ST, *SC]
    rows = {n: f"{n}[:r]" for n in ZA + D}
    rows.update({"X": "xs", "Y": "ys", "t": "t + 1", "epoch": "epoch0 + e", "drop": "1"})
    swapped = dict(rows)
    swapped.update({n: f"{n}_out" for n in buffered})
    swapped.update({f"{n}_out": n for n in buffered})
    train_step_call = ", ".join(rows.get(n, n) for n in args["batch"])
    train_step_call_swapped = ", ".join(swapped.get(n, n) for n in args["batch"])

    reg_call = "".join(f", hd[{k!r}]" for k, _ in model.regularization if k in ("l1", "l2"))

    def a_prev(l: int) -> str:
        """What layer l reads: X, the previous activations, or their dropped-out copy H."""
        return "X" if l == 1 else (f"H{l - 1}" if l - 1 in drops else f"A{l - 1}")

    layers = []
    for l in range(1, L + 1):
        a_eq = d.eq(f"forward.a{l}")
        p = dropout_rate(model, l)
        if a_eq.kind == "softmax":  # the exponential of each shifted logit; normalised per row
            numerator = sp.fraction(a_eq.rhs)[0].xreplace({softmax.indexed("z", l, softmax.j): elem("z", l)})
            layers.append({"l": l, "softmax": True, "relu": False, "drop": 0.0, "a_prev": a_prev(l),
                           "z_eq": describe(d.eq(f"forward.z{l}")), "a_eq": describe(a_eq),
                           "act_lines": em.lines(f"a_{l}", numerator)})
            continue
        layers.append({
            "softmax": False,
            "l": l,
            "drop": p,
            "keep_scale": repr(1.0 / (1.0 - p)) if p else "",
            "h_eq": describe(d.eq(f"forward.h{l}")) if p else "",
            "a_prev": a_prev(l),
            "z_eq": describe(d.eq(f"forward.z{l}")),
            "a_eq": describe(a_eq),
            "act_lines": em.lines(f"a_{l}", a_eq.rhs),
        })
        # a hidden ReLU without dropout whose pre-activations the backward pass does not read (it
        # reads a > 0): _mm_relu stores max(z, 0) from the product's registers, exactly as the
        # element loop would compute it, and Z_l is not written
        relu_line = f"a_{l} = (z_{l} if (z_{l} > 0.0) else 0.0)"
        layers[-1]["relu"] = (l < L and not p and layers[-1]["act_lines"] == [relu_line]
                              and elem("z", l) not in d.eq(f"delta{l}").rhs.free_symbols)

    shapes = model.param_shapes()
    back_layers = []
    for l in range(L, 0, -1):
        entry = {
            "l": l,
            "a_prev": a_prev(l),
            "gw_eq": describe(d.eq(f"grad.W{l}")),
            "gb_eq": describe(d.eq(f"grad.b{l}")),
        }
        if l > 1:
            deq = d.eq(f"delta{l - 1}")
            entry.update({
                # a layer of one unit: E_{l-1} = Delta_l W_l^T is an outer product, computed inside
                # the delta loop instead of in a pass of its own through memory
                "outer": shapes[f"W{l}"][1] == 1,
                "e_eq": describe(d.eq(f"backward.e{l - 1}")),
                "delta_eq": describe(deq),
                "delta_views": em.views(deq.rhs, l - 1),
                "delta_loads": em.loads(deq.rhs, l - 1),
                "delta_lines": em.lines(f"delta_{l - 1}", deq.rhs),
            })
        back_layers.append(entry)

    out_delta = d.eq(f"delta{L}")
    element_syms = [elem("z", L), elem("a", L), sp.Symbol("y", real=True), softmax.t, softmax.tau, softmax.w]
    scale, core = out_delta.rhs.as_independent(*element_syms, as_Add=False)
    loss_el = d.eq("loss.element")
    vector = softmax_context(d, em, core) if layers[-1]["softmax"] else {"vector_loss": False}
    if vector["vector_loss"] and not vector["class_weights_repr"]:
        # without class weights the softmax delta is elementwise, (a - t)/N: the flat loop below
        # (vectorised over the whole batch) with the target's definition substituted
        names = {e.key for e in d.equations}
        if "loss.target" in names:
            core = core.xreplace({softmax.t: d.eq("loss.target").rhs})
        vector["vector_loss_rows"] = False
    else:
        vector["vector_loss_rows"] = vector["vector_loss"]

    upd = update_context(d, em)

    spec = model.to_dict()
    init = [default_init(layer.activation, layer.param_dict) for layer in model.layers]
    context = {
        "model": model,
        "summary": model.summary(),
        "template": MODULE_TEMPLATE,
        "spec_hash": spec_hash(model),
        "spec_repr": pprint.pformat(spec, sort_dicts=False, width=96),
        "param_names_repr": repr(tuple(P)),
        "param_names": P,
        "hyper_repr": repr(model.hyper()),
        "optimizer_doc": textwrap.wrap(d.optimizer.doc, 92),
        "hyper_doc": ", ".join(f"{k}={v!r}" for k, v in model.hyper().items()),
        "hyper_ranges_repr": _hyper_ranges(model.hyper_rules()),
        "init_repr": repr(tuple((s, round(gain, 15)) for s, gain in init)),
        "equation_lines": [describe(e) for e in d.equations],
        "L": L,
        "layers": layers,
        "back_layers": back_layers,
        "loss_eq": describe(loss_el),
        "loss_views": em.views(loss_el.rhs, L),
        "loss_loads": em.loads(loss_el.rhs, L),
        "loss_lines": em.lines("ell", loss_el.rhs),
        "delta_eq": describe(out_delta),
        "delta_scale": em.printer.doprint(scale),
        "delta_views": em.views(core, L),
        "delta_loads": em.loads(core, L),
        "delta_lines": em.lines(f"delta_{L}", core),
        **upd,
        "state_names_repr": repr(tuple(rule_eqs.state)),
        "scalar_state_repr": repr(tuple(rule_eqs.scalar_state)),
        "init_hyper": sorted({s.name for v in [*rule_eqs.state.values(), *rule_eqs.scalar_state.values()]
                              for s in v.free_symbols}),
        "state_init_repr": "{" + ", ".join(f"{n!r}: {em.printer.doprint(v)}" for n, v in rule_eqs.state.items()) + "}",
        "scalar_init_repr": "{" + ", ".join(f"{n!r}: {em.printer.doprint(v)}"
                                            for n, v in rule_eqs.scalar_state.items()) + "}",
        "runtime_abi": runtime_version()[0],
        "runtime_sha": runtime_version()[1],
        "state_names": list(rule_eqs.state),
        "scalar_names": list(rule_eqs.scalar_state),
        "hyper_args": "".join(f", {h}" for h in H),
        "forward_args": ", ".join(args["forward"]),
        "backward_args": ", ".join(args["backward"]),
        "update_args": ", ".join(args["update"]),
        "step_args": ", ".join(args["step"]),
        "forward_call": call("forward"),
        "backward_call": call("backward"),
        "step_call": call("step"),
        "batch_args": ", ".join(args["batch"]),
        "batch_codes": batch_codes,
        "kernel_codes": kernel_codes,
        "train_args": ", ".join(args["train"]),
        "step_batch_call": step_batch_call,
        "train_step_call": train_step_call,
        "train_step_call_swapped": train_step_call_swapped,
        "train_call": call("train"),
        # train_many() names its stacked arrays as train() names the single ones
        "many_py_call": ", ".join([py[n] for n in args["train"] if n not in H] + ["results"] + (["*hv"] if H else [])),
        "many_args": ", ".join(args["many"]),
        "many_call": many_call,
        "dropout": bool(drops),
        "dropout_repr": repr(tuple(dropout_rate(model, l) for l in range(1, L))),
        "register_z_repr": repr(tuple(layer["l"] for layer in layers if layer["relu"])),
        "reg_call": reg_call,
        **vector,
    }
    return _environment().get_template(MODULE_TEMPLATE).render(**context)


def softmax_context(d: Derivation, em: _Emitter, core: sp.Expr) -> dict:
    """Template pieces of cross-entropy after a softmax output: the loss and the output delta are
    computed row by row (the row's log-sum-exp, the targets' row sum and the weights' sum)."""
    names = {e.key for e in d.equations}
    target = d.eq("loss.target").rhs if "loss.target" in names else None
    weights = loss_option(d.model, "class_weights")
    ell = d.eq("loss.element").rhs
    return {
        "vector_loss": True,
        "class_weights_repr": repr(tuple(float(v) for v in weights)) if weights else None,
        "lse_eq": describe(d.eq("loss.lse")),
        "weight_eq": describe(d.eq("loss.weight")) if weights else "",
        "target_eq": describe(d.eq("loss.target")) if target is not None else "",
        "target_lines": em.lines("t", target) if target is not None else [],
        "ell_lines": em.lines("ell", ell),
        "row_sum": softmax.tau in core.free_symbols,
        "vector_delta_lines": em.lines(f"delta_{d.model.depth}", core),
    }


def update_context(d: Derivation, em: _Emitter) -> dict:
    """Template pieces of the penalty, regularize and update kernels, from the update equations."""
    model = d.model
    rule_eqs = d.optimizer_equations
    reg = [k for k, _ in model.regularization if k in ("l1", "l2")]
    ctx: dict = {"penalty": bool(reg), "reg_args": "".join(f", {k}" for k in reg),
                 "clip_norm": "norm" in dict(model.clip), "clip_value_line": None}
    if reg:
        ctx["penalty_lines"] = em.lines("r", d.eq("loss.penalty").rhs)
        ctx["regularize_lines"] = em.lines("g", d.eq("grad.penalty").rhs)
        ctx["penalty_eq"] = describe(d.eq("loss.penalty"))
        ctx["regularize_eq"] = describe(d.eq("grad.penalty"))
    updates = [e for e in d.section("update") if e.kind == "update"]
    element = {optimizers.theta, optimizers.g} | {optimizers.S(n) for n, _ in rule_eqs.updates}
    element |= {optimizers.S(n) for n in rule_eqs.state}
    exprs, table = hoist([e.rhs for e in updates], element)
    scalars = [e for e in d.section("update") if e.kind == "scalar"]
    ctx["scalar_lines"] = [line for e in scalars for line in em.lines(e.lhs.name, e.rhs)]
    ctx["hoisted_lines"] = [f"{sym.name} = {em.printer.doprint(expr)}" for expr, sym in table.items()]
    # _factors computes the scalar lines and the hoisted factors once per step; the element loop of
    # _update_one reads them from the tuple it returns
    ctx["factor_names"] = list(dict.fromkeys([e.lhs.name for e in scalars] + [sym.name for sym in table.values()]))
    lines = []
    for e, rhs in zip(updates, exprs):
        lines.append(f"# {describe(e)}")
        lines += em.lines(e.lhs.name, rhs)
    ctx["update_lines"] = lines
    if "value" in dict(model.clip):
        ctx["clip_value_line"] = em.lines("g", d.eq("update.clip_value").rhs)[-1]
    if ctx["clip_norm"]:
        ctx["clip_coef_line"] = em.lines("clip_coef", d.eq("update.clip_coef").rhs)[-1]
    ctx["scalar_state_lines"] = [(e.lhs.name, em.lines(e.lhs.name, e.rhs)) for e in d.section("update")
                                 if e.kind == "scalar_state"]
    ctx["update_eqs"] = [describe(e) for e in d.section("update")]
    return ctx

def render_package_init(models: list[ModelSpec], source: str) -> str:
    """``__init__.py`` of the output package: a docstring and the sorted model names."""
    names = sorted(m.name for m in models)
    return _environment().get_template("package_init.py.j2").render(
        names=names, names_repr=repr(tuple(names)), source=source)
