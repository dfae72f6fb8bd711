r"""The derivation of a model: ordered, named equations, the single source of text and code.

For a network with layers :math:`l = 1..L`, inputs :math:`A_0 = X` (:math:`N \times n_0`) and
targets :math:`Y` (:math:`N \times n_L`), the equations are the textbook chain rule:

* forward: :math:`Z_l = A_{l-1} W_l + \mathbb{1} b_l`, :math:`a_l = f_l(z_l)` elementwise;
* loss: :math:`L = \frac{1}{N n_L} \sum_{ij} \ell(\hat y_{ij}, y_{ij})`, computed from the logits
  in a stable form where one exists;
* output delta: :math:`\delta_L = \partial L / \partial z_L`, derived jointly for the output
  activation and the loss (BCE∘σ gives :math:`(a_L - y)/(N n_L)`);
* backward: :math:`E_l = \Delta_{l+1} W_{l+1}^\top`, :math:`\delta_l = e_l \, f_l'(a_l)`;
* gradients: :math:`\partial L/\partial W_l = A_{l-1}^\top \Delta_l`,
  :math:`\partial L/\partial b_l = \mathbb{1}^\top \Delta_l`;
* update: the optimizer's equations, per parameter element.

Elementwise equations hold scalar SymPy expressions in the element symbols ``z_l``, ``a_l``,
``e_l``, ``y``; matrix equations hold SymPy matrix expressions. The code generator prints the
elementwise right-hand sides as they are stored here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .blocks import activations, losses, optimizers, schedules, softmax
from .blocks.joint import loss_element, output_delta_forms  # re-exported: derive.derivation's names as before
from .spec import ModelSpec
from .symbolic import a, z

N = sp.Symbol("N", positive=True, integer=True)
SECTIONS = ("forward", "loss", "output_delta", "backward", "gradients", "update")
SECTION_TITLES = {
    "forward": "Forward pass",
    "loss": "Loss",
    "output_delta": "Output-layer delta",
    "backward": "Backward recursion",
    "gradients": "Parameter gradients",
    "update": "Update rule",
}


@dataclass(frozen=True)
class Equation:
    """One named equation ``lhs = rhs``.

    ``kind`` says how it is computed: ``affine``, ``matmul``, ``colsum`` (matrix equations),
    ``elementwise`` (a scalar expression applied to every element), ``mean`` (the loss
    reduction) or ``update`` (an optimizer equation applied to every parameter element).
    ``steps`` are intermediate forms shown to the reader between ``lhs`` and ``rhs``.
    """

    key: str
    section: str
    lhs: sp.Basic
    rhs: sp.Basic
    kind: str
    layer: int | None = None
    note: str = ""
    steps: tuple[sp.Basic, ...] = ()


@dataclass(frozen=True)
class Derivation:
    """All equations of one model, in order, plus the element symbols they use."""

    model: ModelSpec
    equations: tuple[Equation, ...]
    activation_values: dict = field(default_factory=dict)  # symbol -> value, per layer
    loss_from_logits: bool = False

    def eq(self, key: str) -> Equation:
        for e in self.equations:
            if e.key == key:
                return e
        raise KeyError(key)

    def section(self, name: str) -> list[Equation]:
        return [e for e in self.equations if e.section == name]

    @property
    def optimizer(self) -> optimizers.OptimizerRule:
        return optimizers.REGISTRY[self.model.optimizer.name]

    @property
    def optimizer_equations(self) -> optimizers.Equations:
        return self.optimizer.equations(dict(self.model.optimizer.options))


# ----------------------------------------------------------------------------- symbols


def width(l: int) -> sp.Symbol:
    """The width symbol n_l (n_0 is the number of inputs)."""
    return sp.Symbol(f"n_{l}", positive=True, integer=True)


def elem(name: str, l: int) -> sp.Symbol:
    """The element symbol ``name_l`` (z_1, a_2, e_1, delta_2)."""
    return sp.Symbol(f"{name}_{l}", real=True)


def mat(name: str, l: int, rows: sp.Expr, cols: sp.Expr) -> sp.MatrixSymbol:
    return sp.MatrixSymbol(f"{name}_{l}", rows, cols)


def layer_symbols(model: ModelSpec, l: int) -> dict[sp.Symbol, sp.Symbol]:
    """Block symbols -> layer-l symbols: z -> z_l, a -> a_l, an activation parameter p -> p_l."""
    rule = activations.REGISTRY[model.layers[l - 1].activation]
    table = {z: elem("z", l), a: elem("a", l)}
    table.update({s: sp.Symbol(f"{s.name}_{l}", positive=True) for s in rule.symbols().values()})
    return table


# ----------------------------------------------------------------------------- the chain rule


def dropout_rate(model: ModelSpec, l: int) -> float:
    """The dropout rate of layer l's output (0 for the output layer and layers without dropout)."""
    return model.dropout[l - 1] if model.dropout and l <= len(model.dropout) else 0.0


def derive_model(model: ModelSpec) -> Derivation:
    """Build the ordered equations of ``model`` (forward, loss, deltas, gradients, update)."""
    L = model.depth
    eqs: list[Equation] = []
    act_values: dict[sp.Symbol, float] = {}
    A = {0: sp.MatrixSymbol("A_0", N, width(0))}
    for l, layer in enumerate(model.layers, start=1):
        rule = activations.REGISTRY[layer.activation]
        W = mat("W", l, width(l - 1), width(l))
        b = mat("b", l, 1, width(l))
        Z = mat("Z", l, N, width(l))
        A[l] = mat("A", l, N, width(l))
        eqs.append(Equation(f"forward.z{l}", "forward", Z, A[l - 1] * W + sp.OneMatrix(N, 1) * b,
                            "affine", l, "pre-activation" + (" (A_0 = X)" if l == 1 else "")))
        to_layer = layer_symbols(model, l)
        act_values.update({to_layer[rule.symbols()[k]]: v for k, v in layer.params})
        if rule.vector:  # softmax: each output reads its whole row
            sm = softmax.forms(l, width(l))
            eqs.append(Equation(f"forward.a{l}", "forward", softmax.indexed("a", l, softmax.j), sm.shifted,
                                "softmax", l, f"softmax over each row of Z_{l}, computed with the row's "
                                f"largest logit m_{l} subtracted (every exponent <= 0: no overflow)",
                                steps=(sm.definition,)))
            continue
        forms = activations.forms(layer.activation)
        eqs.append(Equation(f"forward.a{l}", "forward", elem("a", l), forms.f.xreplace(to_layer),
                            "elementwise", l, f"{layer.activation} activation, elementwise"))
        if dropout_rate(model, l):
            p = dropout_rate(model, l)
            eqs.append(Equation(f"forward.h{l}", "forward", elem("h", l), elem("m", l) * elem("a", l),
                                "elementwise", l,
                                f"inverted dropout while training: m_{l} = 0 with probability {p:g}, else "
                                f"1/(1 - {p:g}), drawn per element and step; m_{l} = 1 at prediction"))
            A[l] = mat("H", l, N, width(l))

    out = model.layers[-1]
    # the loss's options (Huber's delta) are build-time constants, substituted like activation parameters
    act_values.update(losses.REGISTRY[model.loss].values(model.loss_options))
    if activations.REGISTRY[out.activation].vector:
        eqs += softmax_equations(model)
    else:
        eqs += output_equations(model)

    for l in range(L, 0, -1):
        if l < L:
            layer = model.layers[l - 1]
            act_forms = activations.forms(layer.activation)
            fprime = act_forms.derivative
            to_layer = layer_symbols(model, l)
            eqs.append(Equation(f"backward.e{l}", "backward", mat("E", l, N, width(l)),
                                mat("Delta", l + 1, N, width(l + 1)) * mat("W", l + 1, width(l), width(l + 1)).T,
                                "matmul", l, "error propagated back through W_{l+1}"))
            mask = elem("m", l) if dropout_rate(model, l) else sp.S.One
            eqs.append(Equation(f"delta{l}", "backward", elem("delta", l),
                                elem("e", l) * mask * fprime.xreplace(to_layer), "elementwise", l,
                                f"times the derivative of {layer.activation}"
                                + (" in its output form" if act_forms.in_output_form else "")
                                + (f" and the dropout mask m_{l}" if dropout_rate(model, l) else ""),
                                steps=(act_forms.raw_derivative.xreplace(to_layer),)))
        Delta = mat("Delta", l, N, width(l))
        eqs.append(Equation(f"grad.W{l}", "gradients", sp.Symbol(f"dL/dW_{l}"),
                            A[l - 1].T * Delta, "matmul", l))
        eqs.append(Equation(f"grad.b{l}", "gradients", sp.Symbol(f"dL/db_{l}"),
                            sp.OneMatrix(1, N) * Delta, "colsum", l))
    eqs.sort(key=lambda e: SECTIONS.index(e.section))  # stable: keeps the order within sections

    eqs += penalty_equations(model)
    eqs.sort(key=lambda e: SECTIONS.index(e.section))
    eqs += update_equations(model)
    return Derivation(model, tuple(eqs), act_values, True if activations.REGISTRY[out.activation].vector
                      else loss_element(out.activation, model.loss)[1])


def output_equations(model: ModelSpec) -> list[Equation]:
    """The loss and the output delta of an elementwise output activation."""
    L = model.depth
    out = model.layers[-1]
    to_out = layer_symbols(model, L)
    eqs: list[Equation] = []
    ell_expr, from_logits = loss_element(out.activation, model.loss)
    scale = 1 / (N * width(L))
    i, j = sp.symbols("i j", integer=True, positive=True)
    ell_ij = sp.Function("ell")(sp.Symbol("yhat_ij"), sp.Symbol("y_ij"))
    eqs.append(Equation("loss", "loss", sp.Symbol("L"),
                        scale * sp.Sum(ell_ij, (i, 1, N), (j, 1, width(L))),
                        "mean", L, f"mean of {model.loss_text()} over all N·n_{L} elements"))
    raw_ell = losses.REGISTRY[model.loss].expr
    eqs.append(Equation("loss.element", "loss", sp.Symbol("ell"), ell_expr.xreplace(to_out),
                        "elementwise", L,
                        "computed from the logit z (stable for every finite z)" if from_logits
                        else "computed from the prediction"
                        + (" in a form that cannot overflow" if losses.REGISTRY[model.loss].computed is not None
                           else ""),
                        steps=(raw_ell.subs(losses.yhat, elem("a", L)),)))
    dl, fp, product, joint = output_delta_forms(out.activation, model.loss)
    eqs.append(Equation(f"delta{L}", "output_delta", elem("delta", L),
                        (scale * joint).xreplace(to_out), "elementwise", L,
                        "∂L/∂z_L, loss and output activation simplified jointly",
                        steps=tuple(e.xreplace(to_out) for e in (dl, fp, product))))
    return eqs


def loss_option(model: ModelSpec, name: str, default=None):
    """The value of the loss option ``name`` (label_smoothing, class_weights, ...) or ``default``."""
    return dict(getattr(model, "loss_options", ())).get(name, default)


def softmax_equations(model: ModelSpec) -> list[Equation]:
    r"""Categorical cross-entropy after a softmax output, its targets and the joint output delta.

    The targets t are the rows of Y, smoothed (label_smoothing ε: (1 - ε) y + ε / n_L) and weighted
    by the class weight w_j of their column when those options are given. The mean is over the N
    rows (PyTorch's reduction='mean'), or with class weights over the rows' weights
    Ω = Σ_i Σ_j w_j y_ij (PyTorch's weighted mean for class-index targets).
    """
    L = model.depth
    nL = width(L)
    sm = softmax.forms(L, nL)
    eps = loss_option(model, "label_smoothing", 0.0)
    weights = loss_option(model, "class_weights")
    y = sp.Symbol("y", real=True)
    target = y
    if eps:
        target = (1 - sp.Float(eps)) * y + sp.Float(eps) / nL
    if weights:
        target = softmax.w * target
    eqs: list[Equation] = []
    i, j = sp.symbols("i j", integer=True, positive=True)
    ell_ij = sp.Function("ell")(sp.Symbol("yhat_ij"), sp.Symbol("y_ij"))
    total = sp.Sum(ell_ij, (i, 1, N), (j, 1, nL))
    Omega = sp.Symbol("Omega", positive=True)
    scale = 1 / Omega if weights else 1 / N
    eqs.append(Equation("loss", "loss", sp.Symbol("L"), scale * total, "mean", L,
                        "sum of the N rows' cross-entropies, divided by the sum of the rows' weights"
                        if weights else "mean over the N rows (not the N·n_L elements)"))
    if weights:
        wy = sp.Sum(sp.Symbol("w_j") * sp.Symbol("y_ij"), (i, 1, N), (j, 1, nL))
        eqs.append(Equation("loss.weight", "loss", Omega, wy, "row_weight", L,
                            "Σ_i w_{c_i} for one-hot rows of classes c_i"))
    if target is not y:
        parts = ([f"smoothed with ε = {eps:g}"] if eps else []) + (["weighted by the class weight w of its column"]
                                                               if weights else [])
        eqs.append(Equation("loss.target", "loss", softmax.t, target, "elementwise", L,
                            "the target of each element, " + " and ".join(parts)))
    lse = softmax.row_symbol("lse", L)
    eqs.append(Equation("loss.lse", "loss", lse, sm.lse, "row", L,
                        f"log-sum-exp of each row of Z_{L}, from the forward pass: lse_{L} = m_{L} - log a at the "
                        "row's largest logit (where a >= 1/n_L, so the logarithm is exact)"))
    t_el = softmax.t if target is not y else y
    eqs.append(Equation("loss.element", "loss", sp.Symbol("ell"), t_el * (lse - elem("z", L)), "elementwise", L,
                        "computed from the logits: finite for every finite z",
                        steps=(-t_el * sp.log(elem("a", L)),)))
    # the joint delta: SymPy's general form a_k tau - t_k (found and checked in blocks.softmax);
    # tau = Σ_j t_j is 1 when every target row sums to 1 and there are no class weights
    general = sm.joint
    ak, tk = softmax.indexed("a", L, softmax.k), softmax.indexed("t", None, softmax.k)
    element = general.xreplace({ak: elem("a", L), tk: t_el})
    if not weights:
        element = element.xreplace({softmax.tau: 1})
    found = softmax.found_joint()
    eqs.append(Equation(f"delta{L}", "output_delta", elem("delta", L), scale * element, "elementwise", L,
                        "∂L/∂z_L, cross-entropy and softmax simplified jointly"
                        + ("" if weights else " (each target row sums to 1, so τ = 1)"),
                        steps=(sm.dl_da, sm.jacobian, sm.chain, general, found)))
    return eqs


#: Symbols of the update section besides the optimizer's own.
epoch = sp.Symbol("epoch", nonnegative=True, integer=True)
lr_t = sp.Symbol("lr_t", positive=True)
grad_norm = sp.Symbol("grad_norm", nonnegative=True)
clip_coef = sp.Symbol("clip_coef", positive=True)
#: PyTorch's clip_grad_norm_ adds this to the norm before dividing.
CLIP_NORM_EPS = sp.Float("1e-6")


def penalty_equations(model: ModelSpec) -> list[Equation]:
    """L1/L2 as loss terms: R(θ) = (λ₂/2)θ² + λ₁|θ| per parameter element, and its derived gradient."""
    reg = dict(model.regularization)
    if not ({"l1", "l2"} & set(reg)):
        return []
    th = optimizers.theta
    r = sp.S.Zero
    if "l2" in reg:
        r += optimizers.H("l2") / 2 * th**2
    if "l1" in reg:
        r += optimizers.H("l1") * sp.Abs(th)
    dr = sp.diff(r, th)
    return [
        Equation("loss.penalty", "loss", sp.Symbol("R"), r, "penalty", None,
                 "added to L for every parameter element θ (weights and biases)"),
        Equation("grad.penalty", "gradients", optimizers.g, optimizers.g + dr, "regularize", None,
                 "g ← ∂L/∂θ + ∂R/∂θ, derived by SymPy (coupled weight decay for L2)"),
    ]


def update_equations(model: ModelSpec) -> list[Equation]:
    """Schedule, clipping, decoupled decay and the optimizer's equations, in execution order."""
    rule = optimizers.REGISTRY[model.optimizer.name]
    eqs_spec = rule.equations(dict(model.optimizer.options))
    lr_sym = optimizers.lr
    out: list[Equation] = []
    sched = model.schedule
    if sched.name != "constant":
        counter = optimizers.t - 1 if sched.per == "step" else epoch
        expr = schedules.REGISTRY[sched.name].make(sched.milestones).xreplace({schedules.e: counter})
        out.append(Equation("update.lr_t", "update", lr_t, expr, "scalar", None,
                            f"{sched.name} schedule, counter = completed {sched.per}s"))
        lr_sym = lr_t
    g = optimizers.g
    clip = dict(model.clip)
    if "value" in clip:
        c = optimizers.H("clip_value")
        out.append(Equation("update.clip_value", "update", g, sp.Min(sp.Max(g, -c), c), "update", None,
                            "clip each gradient element to [-c, c]"))
    if "norm" in clip:
        out.append(Equation("update.grad_norm", "update", grad_norm,
                            sp.sqrt(sp.Sum(sp.Symbol("g_k") ** 2, (sp.Symbol("k"), 1, sp.Symbol("P")))),
                            "global", None, "L2 norm over all P gradient elements of all parameters"))
        out.append(Equation("update.clip_coef", "update", clip_coef,
                            sp.Min(1, optimizers.H("clip_norm") / (grad_norm + CLIP_NORM_EPS)), "global", None,
                            "as torch.nn.utils.clip_grad_norm_"))
        out.append(Equation("update.clip_norm", "update", g, g * clip_coef, "update", None,
                            "rescale so the global norm is at most clip_norm"))
    for name, rhs in eqs_spec.scalar_updates:
        out.append(Equation(f"update.{name}", "update", optimizers.S(name), rhs.xreplace({optimizers.lr: lr_sym}),
                            "scalar_state", None, "once per step"))
    if "decoupled_weight_decay" in dict(model.regularization):
        out.append(Equation("update.decay", "update", optimizers.theta,
                            optimizers.theta * (1 - lr_sym * optimizers.H("decoupled_weight_decay")), "update",
                            None, "decoupled weight decay"))
    seen: dict[str, int] = {}
    for target, rhs in eqs_spec.updates:
        seen[target] = seen.get(target, 0) + 1
        key = f"update.{target}" + (f".{seen[target]}" if seen[target] > 1 else "")
        note = "for every parameter θ ∈ {W_l, b_l} with gradient g = ∂L/∂θ" if target == "theta" else ""
        if target in eqs_spec.state:
            note = f"state {target}, one per parameter element, initially {sp.sstr(eqs_spec.state[target])}"
        out.append(Equation(key, "update", optimizers.S(target) if target != "theta" else optimizers.theta,
                            rhs.xreplace({optimizers.lr: lr_sym}), "update", None, note))
    return out
