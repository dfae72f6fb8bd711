"""Model specifications: loaded from TOML or built in Python, validated into frozen dataclasses.

The TOML shape is the contract::

    [model.xor]
    inputs = 2
    layers = [[8, "tanh"], [1, "sigmoid"]]        # (units, activation[, {parameters}])
    loss = "bce"                                   # or a table: { name = "huber", delta = 2.0 }
    optimizer = { name = "sgd", lr = 0.1 }

Every error is a :class:`~derive.errors.SpecError` naming the file, the line of the model's
table where it can be found, the model and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import userblocks
from .blocks import activations, losses, optimizers, schedules
from .errors import SpecError, suggest
from .names import MODULE_RESERVED as MODULE_RESERVED  # re-exported: derive.spec's names as before
from .names import RESERVED_NAMES as RESERVED_NAMES
from .names import WINDOWS_DEVICES as WINDOWS_DEVICES
from .names import check_name

MODEL_KEYS = ("inputs", "layers", "loss", "optimizer", "schedule", "clip", "regularization", "dropout",
              "description")
CLIP_KEYS = {"norm": "clip_norm", "value": "clip_value"}
REG_KEYS = ("l1", "l2", "decoupled_weight_decay")
NONNEG = optimizers.Hyper(0.0, 0.0, float("inf"), low_open=False)
POSITIVE = optimizers.Hyper(1.0, 0.0, float("inf"))
#: Longest model description (it is copied into the generated module's docstring).
MAX_DESCRIPTION = 4000


@dataclass(frozen=True)
class LayerSpec:
    """One dense layer: ``units`` outputs, an activation and its parameters."""

    units: int
    activation: str
    params: tuple[tuple[str, float], ...] = ()

    @property
    def param_dict(self) -> dict[str, float]:
        return dict(self.params)

    def to_list(self) -> list:
        return [self.units, self.activation, self.param_dict] if self.params else [self.units, self.activation]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer by name with its options and every hyperparameter value (defaults filled in)."""

    name: str
    hyper: tuple[tuple[str, float], ...] = ()
    options: tuple[tuple[str, bool], ...] = ()

    @property
    def hyper_dict(self) -> dict[str, float]:
        return dict(self.hyper)

    def to_dict(self) -> dict:
        return {"name": self.name, **dict(self.options), **self.hyper_dict}


@dataclass(frozen=True)
class ScheduleSpec:
    """A learning-rate schedule: name, counter (``epoch`` or ``step``), hyperparameters."""

    name: str = "constant"
    per: str = "epoch"
    hyper: tuple[tuple[str, float], ...] = ()
    milestones: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        out = {"name": self.name, "per": self.per, **dict(self.hyper)}
        if self.milestones:
            out["milestones"] = [int(m) for m in self.milestones]
        return out


class TrainingSettings:
    """Where kernel hyperparameters come from, for anything with an optimizer, a schedule,
    clipping and regularisation (a model, an objective): one source for values and rules."""

    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    clip: tuple[tuple[str, float], ...]
    regularization: tuple[tuple[str, float], ...]

    def hyper(self) -> dict[str, float]:
        """Every kernel hyperparameter with its default: optimizer, schedule, regularisation, clipping."""
        out = dict(self.optimizer.hyper)
        out.update(self.schedule.hyper)
        out.update(self.regularization)
        out.update({CLIP_KEYS[k]: v for k, v in self.clip})
        return out

    def hyper_rules(self) -> dict[str, optimizers.Hyper]:
        """The valid range of each hyperparameter of :meth:`hyper` (checked again at run time)."""
        out = dict(optimizers.REGISTRY[self.optimizer.name].equations(dict(self.optimizer.options)).hyper)
        out.update(schedules.REGISTRY[self.schedule.name].hyper)
        out.update({k: NONNEG for k, _ in self.regularization})
        out.update({CLIP_KEYS[k]: POSITIVE for k, _ in self.clip})
        return out


@dataclass(frozen=True)
class ModelSpec(TrainingSettings):
    """A validated model: build it with :func:`derive.build.build_models` or derive it with
    :func:`derive.derivation.derive_model`."""

    name: str
    inputs: int
    layers: tuple[LayerSpec, ...]
    loss: str
    optimizer: OptimizerSpec
    source: str = "<python>"
    description: str = ""
    schedule: ScheduleSpec = ScheduleSpec()
    clip: tuple[tuple[str, float], ...] = ()  # (("norm", c),) and/or (("value", c),)
    regularization: tuple[tuple[str, float], ...] = ()  # subset of l1, l2, decoupled_weight_decay
    dropout: tuple[float, ...] = ()  # () or one rate per hidden layer (inverted dropout, training only)
    #: The loss's build-time options, e.g. (("delta", 2.0),) for Huber: every option of the loss with
    #: its default filled in (see derive.blocks.losses.Option); () for a loss without options.
    loss_options: tuple[tuple[str, object], ...] = ()

    @property
    def outputs(self) -> int:
        return self.layers[-1].units

    @property
    def depth(self) -> int:
        return len(self.layers)

    def param_names(self) -> tuple[str, ...]:
        return tuple(n for l in range(1, self.depth + 1) for n in (f"W{l}", f"b{l}"))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        widths = [self.inputs] + [layer.units for layer in self.layers]
        shapes: dict[str, tuple[int, ...]] = {}
        for l in range(1, self.depth + 1):
            shapes[f"W{l}"] = (widths[l - 1], widths[l])
            shapes[f"b{l}"] = (widths[l],)
        return shapes

    def to_dict(self) -> dict:
        """The model as plain data with the keys and shapes of the TOML format; user-defined
        blocks it uses are recorded under ``blocks`` (kind -> name -> their declaration)."""
        out = {
            "name": self.name,
            "inputs": self.inputs,
            "layers": [layer.to_list() for layer in self.layers],
            # a plain name without options, as before options existed (the spec hash of every
            # existing module is computed from this dict)
            "loss": self.loss if not self.loss_options else self.loss_table(),
            "optimizer": self.optimizer.to_dict(),
            "schedule": self.schedule.to_dict(),
            "clip": dict(self.clip),
            "regularization": dict(self.regularization),
        }
        if self.dropout:
            out["dropout"] = list(self.dropout)
        blocks = userblocks.describe_blocks(self)
        if blocks:
            out["blocks"] = blocks
        return out

    def loss_table(self) -> dict:
        """The loss as a ``{ name = ..., option = value }`` table (as written in a spec)."""
        opts = losses.REGISTRY[self.loss].options
        return {"name": self.loss, **{k: opts[k].plain(v) for k, v in self.loss_options}}

    def loss_text(self) -> str:
        """The loss in one line: ``huber(delta=2)``, or the name alone without options."""
        if not self.loss_options:
            return self.loss
        opts = losses.REGISTRY[self.loss].options
        return f"{self.loss}({', '.join(f'{k}={opts[k].format(v)}' for k, v in self.loss_options)})"

    def summary(self) -> str:
        layers = " -> ".join(
            [str(self.inputs)]
            + [f"{x.units} {x.activation}" + (f"{x.param_dict}" if x.params else "") for x in self.layers]
        )
        opt = ", ".join([k for k, v in self.optimizer.options if v] + [f"{k}={v:g}" for k, v in self.optimizer.hyper])
        extra = ""
        if self.schedule.name != "constant":
            extra += f"; {self.schedule.name} schedule per {self.schedule.per}"
        if self.clip:
            extra += "; clip " + ", ".join(f"{k} {v:g}" for k, v in self.clip)
        if self.regularization:
            extra += "; " + ", ".join(f"{k} {v:g}" for k, v in self.regularization)
        if self.dropout:
            extra += "; dropout " + ", ".join(f"{p:g}" for p in self.dropout)
        return f"{layers}; loss {self.loss_text()}; {self.optimizer.name}({opt}){extra}"


# --------------------------------------------------------------------------- validation


def check_text(text: object, where: str, what: str, limit: int = MAX_DESCRIPTION, lines: bool = True) -> str:
    """Free text copied into a generated module's docstring or comments (a description, the
    spec file's name): it must not be able to end the docstring or comment it is copied into."""
    if not isinstance(text, str):
        raise SpecError(f"{what} must be a string", where)
    if len(text) > limit:
        raise SpecError(f"{what} is too long ({len(text)} characters; the limit is {limit})", where)
    allowed_controls = "\n\t" if lines else ""
    bad = next((c for c in text if (not c.isprintable() and c not in allowed_controls) or c == "\\"), None)
    if bad is not None or '"""' in text or (not lines and '"' in text):
        shown = bad if bad is not None else '"""' if lines else '"'
        raise SpecError(f"{what} contains {shown!r}, which cannot be copied into the generated module's "
                        f"docstring{'' if lines else ' or comments'}; remove it", where)
    return text


def _int(value: object, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"must be an integer, got {value!r}", where)
    if value < minimum:
        raise SpecError(f"must be at least {minimum}, got {value}", where)
    if value > 1_000_000:
        raise SpecError(f"is implausibly large ({value})", where)
    return value


def make_layer(entry: object, where: str) -> LayerSpec:
    """A layer from ``[units, "activation"]``, ``[units, "activation", {params}]`` or a LayerSpec."""
    if isinstance(entry, LayerSpec):
        entry = entry.to_list()
    if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
        raise SpecError(f"a layer is [units, \"activation\"] or [units, \"activation\", "
                        f"{{parameters}}], got {entry!r}", where)
    units = _int(entry[0], f"{where}: units")
    if not isinstance(entry[1], str):
        raise SpecError(f"activation must be a name (string), got {entry[1]!r}", where)
    rule = activations.get(entry[1], where)
    given = entry[2] if len(entry) == 3 else {}
    if not isinstance(given, Mapping):
        raise SpecError(f"layer parameters must be a table, got {given!r}", where)
    params = activations.check_params(rule, given, where)
    if rule.declared and given:  # a user activation: finite and real with these values too
        userblocks.check_activation_values(rule, f"{where}: activation {rule.name!r}", params)
    return LayerSpec(units, rule.name, tuple(sorted(params.items())))


def make_optimizer(entry: object, where: str) -> OptimizerSpec:
    """An optimizer from a name, a ``{name = ..., hyper = ...}`` table or an OptimizerSpec."""
    if isinstance(entry, OptimizerSpec):
        entry = entry.to_dict()
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise SpecError("optimizer must be a name or a table with a 'name', "
                        f"e.g. {{ name = \"sgd\", lr = 0.1 }}; got {entry!r}", where)
    rule = optimizers.get(entry["name"], where)
    given = {k: v for k, v in entry.items() if k != "name"}
    options, hyper = rule.check(given, where)
    return OptimizerSpec(rule.name, tuple(hyper.items()), tuple(options.items()))


def _table(entry: object, where: str, what: str) -> dict:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        raise SpecError(f"{what} must be a table, got {entry!r}", where)
    return dict(entry)


def make_schedule(entry: object, where: str) -> ScheduleSpec:
    """A schedule from a name or ``{ name = "step", step_size = 1, gamma = 0.5, per = "epoch" }``."""
    if isinstance(entry, ScheduleSpec):
        return entry
    body = _table(entry, where, "schedule")
    rule = schedules.get(body.pop("name", "constant"), where)
    per = body.pop("per", "epoch")
    if per not in ("epoch", "step"):
        raise SpecError(f"per must be 'epoch' or 'step', got {per!r}", f"{where}: per")
    milestones = ()
    if rule.name == "multistep":
        milestones = schedules.check_milestones(body.pop("milestones", None), f"{where}: milestones")
    unknown = sorted(set(body) - set(rule.hyper))
    if unknown:
        raise SpecError(f"schedule {rule.name!r} has no parameter {unknown[0]!r}{suggest(unknown[0], rule.hyper)}",
                        where)
    hyper = {k: h.check(body.get(k, h.default), f"{where}: {k}") for k, h in rule.hyper.items()}
    return ScheduleSpec(rule.name, per, tuple(hyper.items()), milestones)


def make_clip(entry: object, where: str) -> tuple[tuple[str, float], ...]:
    """Gradient clipping ``{ norm = 1.0 }`` (global L2 norm) and/or ``{ value = 0.5 }``."""
    if entry is None:
        return ()
    body = _table(entry, where, "clip")
    unknown = sorted(set(body) - set(CLIP_KEYS))
    if unknown:
        raise SpecError(f"clip has no key {unknown[0]!r}{suggest(unknown[0], CLIP_KEYS)}", where)
    if not body:
        raise SpecError("clip needs norm = ... and/or value = ...", where)
    return tuple((k, POSITIVE.check(body[k], f"{where}: {k}")) for k in CLIP_KEYS if k in body)


def make_regularization(entry: object, optimizer: OptimizerSpec, where: str) -> tuple[tuple[str, float], ...]:
    """``{ l1 = ..., l2 = ..., decoupled_weight_decay = ... }`` (each ≥ 0, applied to every parameter)."""
    if entry is None:
        return ()
    body = _table(entry, where, "regularization")
    unknown = sorted(set(body) - set(REG_KEYS))
    if unknown:
        raise SpecError(f"regularization has no key {unknown[0]!r}{suggest(unknown[0], REG_KEYS)}", where)
    if "decoupled_weight_decay" in body and "weight_decay" in optimizer.hyper_dict:
        raise SpecError(f"optimizer {optimizer.name!r} already applies decoupled weight decay; set its "
                        "weight_decay instead", where)
    return tuple((k, NONNEG.check(body[k], f"{where}: {k}")) for k in REG_KEYS if k in body)


def make_dropout(entry: object, depth: int, where: str) -> tuple[float, ...]:
    """``dropout = p`` (every hidden layer) or ``[p_1, ..., p_{L-1}]`` (one rate per hidden layer),
    each in [0, 1): the probability of zeroing a hidden unit's output during training."""
    if entry is None:
        return ()
    hidden = depth - 1
    if isinstance(entry, (list, tuple)):
        if len(entry) != hidden:
            raise SpecError(f"dropout needs one rate per hidden layer ({hidden}), got {len(entry)}", where)
        rates = list(entry)
    else:
        rates = [entry] * hidden
    if not hidden:
        raise SpecError("dropout applies to the outputs of hidden layers, and this model has none", where)
    out = []
    for k, p in enumerate(rates):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
            raise SpecError(f"dropout rate of hidden layer {k + 1} must be a number in [0, 1), got {p!r}", where)
        out.append(float(p))
    return tuple(out) if any(out) else ()


def make_model(
    name: str,
    inputs: int,
    layers: Sequence,
    loss: object,
    optimizer: object = "sgd",
    *,
    source: str = "<python>",
    description: str = "",
    where: str | None = None,
    schedule: object = None,
    clip: object = None,
    regularization: object = None,
    dropout: object = None,
) -> ModelSpec:
    """Validate and build a :class:`ModelSpec` (the Python API behind ``Model``).

    ``source`` is recorded in the model (and the generated header); ``where`` prefixes errors
    (a file and line), and defaults to ``source``.
    """
    where = f"{where or source}: model {name!r}"
    check_name(name, where)
    inputs = _int(inputs, f"{where}: inputs")
    if not isinstance(layers, (list, tuple)) or not layers:
        raise SpecError("layers must be a non-empty list of [units, \"activation\"]", f"{where}: layers")
    built = tuple(make_layer(entry, f"{where}: layers[{i}]") for i, entry in enumerate(layers))
    loss_rule, loss_options = make_loss(loss, built[-1].units, f"{where}: loss")
    _check_vector_output(built, loss_rule, where)
    if loss_rule.needs_range is not None:
        out = built[-1]
        lo, hi = _value_range(out, f"{where}: layers[{len(built) - 1}]")
        want_lo, want_hi = loss_rule.needs_range
        if lo < want_lo or hi > want_hi:
            raise SpecError(
                f"loss {loss_rule.name!r} needs predictions in [{want_lo:g}, {want_hi:g}], but the "
                f"output activation {out.activation!r} ranges over ({lo:g}, {hi:g}); use a "
                "'sigmoid' output layer (or loss 'mse')",
                f"{where}: layers[{len(built) - 1}]",
            )
    opt = make_optimizer(optimizer, f"{where}: optimizer")
    check_text(description, f"{where}: description", "description")
    check_text(source, where, "the spec source name", limit=200, lines=False)
    sched = make_schedule(schedule or "constant", f"{where}: schedule")
    clips = make_clip(clip, f"{where}: clip")
    reg = make_regularization(regularization, opt, f"{where}: regularization")
    _check_hyper_names(opt, sched, clips, reg, where)
    drop = make_dropout(dropout, len(built), f"{where}: dropout")
    return ModelSpec(name, inputs, built, loss_rule.name, opt, source, description, sched, clips, reg, drop,
                     loss_options=loss_options)


def make_loss(entry: object, outputs: int, where: str) -> tuple[losses.LossRule, tuple[tuple[str, object], ...]]:
    """A loss from a name or a ``{ name = "huber", delta = 2.0 }`` table: its rule and its options
    (every option of the loss, defaults filled in); ``outputs`` is the model's output width."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise SpecError("loss must be a name or a table with a 'name', e.g. "
                        f"{{ name = \"huber\", delta = 2.0 }}; got {entry!r}", where)
    rule = losses.get(entry["name"], where)
    given = {k: v for k, v in entry.items() if k != "name"}
    return rule, rule.check_options(given, where, outputs)


def _check_vector_output(layers: tuple[LayerSpec, ...], loss_rule, where: str) -> None:
    """Softmax only as the output layer, with cross-entropy; cross-entropy only after softmax."""
    last = len(layers) - 1
    for idx, layer in enumerate(layers[:-1]):
        if activations.REGISTRY[layer.activation].vector:
            raise SpecError(f"{layer.activation!r} is only for the output layer (it normalises the output row "
                            "into class probabilities); use e.g. 'relu' or 'tanh' in hidden layers",
                            f"{where}: layers[{idx}]")
    out = layers[-1]
    if activations.REGISTRY[out.activation].vector:
        if out.units < 2:
            raise SpecError(f"a softmax output needs at least 2 units (one per class), got {out.units}; for two "
                            "classes use [1, \"sigmoid\"] with loss 'bce', or [2, \"softmax\"]",
                            f"{where}: layers[{last}]")
        if loss_rule.vector != out.activation:
            raise SpecError(f"a softmax output needs loss 'cross_entropy', not {loss_rule.name!r} (for independent "
                            "yes/no labels use 'sigmoid' outputs with 'bce'; for regression an 'identity' output)",
                            f"{where}: loss")
    elif loss_rule.vector is not None:
        hint = " ('bce' is the cross-entropy of a sigmoid output)" if out.activation == "sigmoid" else ""
        raise SpecError(f"loss {loss_rule.name!r} needs a {loss_rule.vector!r} output layer, not "
                        f"{out.activation!r}: declare the last layer as [n_classes, \"{loss_rule.vector}\"]{hint}",
                        f"{where}: layers[{last}]")


def _value_range(layer: LayerSpec, where: str) -> tuple[float, float]:
    """The output activation's range; a SpecError when SymPy cannot find it (user activations)."""
    if not activations.REGISTRY[layer.activation].declared:
        return activations.value_range(layer.activation, layer.param_dict)
    try:
        with userblocks.time_limit(userblocks.TIME_LIMIT, f"the range of activation {layer.activation!r}", where):
            return activations.value_range(layer.activation, layer.param_dict)
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 (limits of arbitrary user expressions can fail in many ways)
        raise SpecError(f"cannot determine the range of activation {layer.activation!r} "
                        f"({type(exc).__name__}: {exc})", where) from None


def _check_hyper_names(opt: OptimizerSpec, sched: ScheduleSpec, clips, reg, where: str) -> None:
    """Every kernel hyperparameter has one name: a (user) optimizer's hyperparameter may not
    also be one of the schedule, the regularisation or the clipping."""
    owners: dict[str, str] = {}
    for owner, names in ((f"optimizer {opt.name!r}", [k for k, _ in opt.hyper]),
                         (f"schedule {sched.name!r}", [k for k, _ in sched.hyper]),
                         ("regularization", [k for k, _ in reg]),
                         ("clip", [CLIP_KEYS[k] for k, _ in clips])):
        for k in names:
            if k in owners:
                raise SpecError(f"hyperparameter {k!r} of {owner} is also a hyperparameter of {owners[k]}; "
                                "rename it in the optimizer", where)
            owners[k] = owner


def Dense(units: int, activation: str, **params: float) -> LayerSpec:  # noqa: N802 (reads like a layer)
    """A dense layer for the Python API: ``Dense(8, "tanh")``, ``Dense(4, "leaky_relu", slope=0.1)``."""
    return make_layer([units, activation, params] if params else [units, activation], "Dense(...)")


def Model(name: str, inputs: int, layers: Sequence, loss: object, optimizer: object = "sgd",  # noqa: N802
          description: str = "", schedule: object = None, clip: object = None,
          regularization: object = None, dropout: object = None) -> ModelSpec:
    """Declare a model in Python; the same validation as a TOML file. ``loss`` is a name or a
    table with the loss's options, e.g. ``{"name": "huber", "delta": 2.0}``.

    >>> Model("xor", inputs=2, layers=[Dense(8, "tanh"), Dense(1, "sigmoid")], loss="bce",
    ...       optimizer={"name": "sgd", "lr": 0.1}).summary()
    '2 -> 8 tanh -> 1 sigmoid; loss bce; sgd(lr=0.1)'
    """
    return make_model(name, inputs, layers, loss, optimizer, description=description, schedule=schedule,
                      clip=clip, regularization=regularization, dropout=dropout)


# --------------------------------------------------------------------------- TOML


def _line_of(text: str, name: str, kind: str = "model") -> int | None:
    pattern = re.compile(rf"^[ \t]*\[[ \t]*{kind}\.(\"?){re.escape(name)}\1[ \t]*\]", re.M)
    m = pattern.search(text)
    if m:
        return text.count("\n", 0, m.start()) + 1
    m = re.search(rf"^[ \t]*\"?{re.escape(name)}\"?[ \t]*=", text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None


TOP_LEVEL = ("model", "activation", "loss", "optimizer")


def parse_catalogue(text: str, source: str) -> dict[str, ModelSpec]:
    """Models of a TOML catalogue text, in file order; ``source`` names it in errors.

    User-defined blocks (``[activation.NAME]``, ``[loss.NAME]``, ``[optimizer.NAME]``) are
    validated and registered first (see :mod:`derive.userblocks`); a model may use only the
    user blocks this text declares. If any model is invalid, the blocks this call registered are
    unregistered again, so a failed load leaves nothing behind.
    """
    if not isinstance(text, str):
        raise SpecError("a catalogue must be text", source)
    check_text(source, source, "the spec source name", limit=200, lines=False)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"malformed TOML: {exc}", source) from None
    except RecursionError:
        raise SpecError("malformed TOML: nested too deeply", source) from None
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise SpecError(f"unknown top-level table {unknown[0]!r}{suggest(unknown[0], TOP_LEVEL)}", source)
    table = data.get("model", {})
    if not isinstance(table, dict) or not table:
        raise SpecError("no models: declare at least one [model.NAME] table", source)
    decls = userblocks.declare_all(data, lambda kind, name: _line_of(text, name, kind), source)
    here = {(d.kind, d.name) for d in decls}
    new = userblocks.register(decls)
    try:
        return _parse_models(text, source, table, here)
    except BaseException:
        userblocks.unregister(new)
        raise


def _parse_models(text: str, source: str, table: dict, here: set[tuple[str, str]]) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = {}
    folded: dict[str, str] = {}
    for name, body in table.items():
        line = _line_of(text, name)
        where = f"{source}:{line}" if line else source
        if isinstance(name, str) and name.lower() in folded:
            raise SpecError(f"model names {folded[name.lower()]!r} and {name!r} differ only in case: their "
                            "files would collide on case-insensitive file systems", where)
        folded[name.lower() if isinstance(name, str) else name] = name
        if not isinstance(body, dict):
            raise SpecError(f"model {name!r} must be a table", where)
        extra = sorted(set(body) - set(MODEL_KEYS))
        if extra:
            raise SpecError(f"model {name!r}: unknown key {extra[0]!r}{suggest(extra[0], MODEL_KEYS)}", where)
        for key in ("inputs", "layers", "loss"):
            if key not in body:
                raise SpecError(f"model {name!r}: missing key {key!r}", where)
        model = make_model(name, body["inputs"], body["layers"], body["loss"],
                           body.get("optimizer", "sgd"), source=source,
                           description=body.get("description", ""), where=where,
                           schedule=body.get("schedule"), clip=body.get("clip"),
                           regularization=body.get("regularization"), dropout=body.get("dropout"))
        for kind, block in userblocks.used_blocks(model):
            if (kind, block) not in here:
                first = userblocks.declared(kind, block).location
                raise SpecError(f"{kind} {block!r} is declared in another spec ({first}), not in this one; "
                                f"declare [{kind}.{block}] here too (a catalogue uses only its own user blocks)",
                                f"{where}: model {name!r}")
        userblocks.check_model(model, f"{where}: model {name!r}")
        models[name] = model
    return models


def load_catalogue(path: str | Path) -> dict[str, ModelSpec]:
    """Read and validate a TOML catalogue file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("spec file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file: {exc}", str(path)) from None
    return parse_catalogue(text, path.name)


def select(models: Mapping[str, ModelSpec], only: Iterable[str] | None) -> list[ModelSpec]:
    """The models named in ``only`` (all when None), with a clear error for unknown names."""
    if not only:
        return list(models.values())
    chosen = []
    for name in only:
        if name not in models:
            raise SpecError(f"no model {name!r} in the catalogue{suggest(name, models)}")
        chosen.append(models[name])
    return chosen


__all__ = ["Dense", "LayerSpec", "Model", "ModelSpec", "OptimizerSpec", "load_catalogue",
           "make_model", "parse_catalogue", "select"]
