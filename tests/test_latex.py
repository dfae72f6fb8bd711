"""The readable derivation: LaTeX, Markdown and text documents.

* Single source: every equation of the derivation is displayed, printed from its own SymPy object,
  and those objects, evaluated numerically, reproduce the generated kernels' intermediate values
  (Z_l, A_l, the loss, E_l, every delta, every gradient, NAdam's update) on random inputs.
* Every catalogue model's document compiles with a real pdflatex, with no overfull line.
* A snapshot of one document (tests/snapshots/xor.tex) catches unintended changes in review.
* The command line: every command, flag and error.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

import cli
from derive import latex
from derive.derivation import Derivation, derive_model
from derive.symbolic import Sigmoid, Softplus
from derive.text import to_text

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "derive.toml"
SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "xor.tex"
UPDATE_ENV = "DERIVE_UPDATE_SNAPSHOTS"
NUMERIC = {"Softplus": lambda x: np.logaddexp(0.0, x), "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x))}


@pytest.fixture(scope="module")
def models():
    from derive.spec import load_catalogue

    return load_catalogue(CATALOGUE)


@pytest.fixture(scope="module")
def derivations(models):
    return {name: derive_model(m) for name, m in models.items()}


def run(*args):
    return CliRunner().invoke(cli.main, [*args, "--spec", str(CATALOGUE)])


def evaluate(expr: sp.Basic, env: dict):
    """``expr`` evaluated with numpy; ``env`` maps symbol names to numbers or arrays."""
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    missing = [s.name for s in syms if s.name not in env]
    assert not missing, f"no value for {missing} in {expr}"
    f = sp.lambdify(syms, expr, modules=[NUMERIC, "numpy"])
    return f(*[env[s.name] for s in syms])


def call(kernel, arrays: dict):
    """Run a generated kernel's Python source with its arguments taken by name from ``arrays``."""
    fn = kernel.py_func
    return fn(**{p: arrays[p] for p in inspect.signature(fn).parameters})


# ----------------------------------------------------------------------------- single source


def test_every_equation_is_displayed_from_its_own_sympy_object(derivations):
    for name, d in derivations.items():
        rows = latex.rows(d)
        shown = [r for r in rows if r.source is not None and r.part == "rhs"]
        assert [r.source.key for r in shown] == [r.source.key for r in shown if r.source in d.equations]
        assert {id(r.source) for r in shown} == {id(e) for e in d.equations}, f"{name}: an equation is missing"
        for r in rows:
            if r.source is None:
                continue
            obj = r.source.rhs if r.part == "rhs" else r.source.steps[int(r.part[6:-1])]
            pivot = r.source.lhs if isinstance(r.source.lhs, sp.Symbol) else None
            printed = latex.DerivationPrinter(pivot).doprint(obj)
            joined = " ".join(r.lines)
            assert re.sub(r"\s", "", joined) == re.sub(r"\s", "", printed), f"{name}: {r.source.key} is not its object"
            assert r.tag in ("", r.source.key)
        assert latex.to_latex(d).count(r"\eqkey{") == len(d.equations)


@pytest.mark.parametrize("name", ["xor", "deep_sigmoid", "activations", "regression"])
def test_displayed_equations_equal_the_kernels_intermediate_values(name, derivations):
    d: Derivation = derivations[name]
    m = d.model
    mod = importlib.import_module(f"generated.{name}")
    rng = np.random.default_rng(5)
    N, L = 6, m.depth
    widths = [m.inputs] + [layer.units for layer in m.layers]
    arrays = {"X": rng.normal(size=(N, m.inputs)), "Y": rng.uniform(size=(N, m.outputs))}
    for l in range(1, L + 1):
        arrays[f"W{l}"] = rng.normal(0, 0.8, size=(widths[l - 1], widths[l]))
        arrays[f"b{l}"] = rng.normal(0, 0.5, size=widths[l])
        for k in ("Z", "A", "D"):
            arrays[f"{k}{l}"] = np.zeros((N, widths[l]))
        arrays[f"gW{l}"] = np.zeros((widths[l - 1], widths[l]))
        arrays[f"gb{l}"] = np.zeros(widths[l])
    arrays["E"] = np.zeros((N, m.outputs))  # the element losses
    call(mod._forward, arrays)
    loss = call(mod._loss, arrays)
    call(mod._backward, arrays)
    element_losses = arrays["E"]

    env = {"N": N, "y": arrays["Y"], "A_0": arrays["X"]}
    env.update({s.name: v for s, v in d.activation_values.items()})
    for l in range(1, L + 1):
        env.update({f"n_{l}": widths[l], f"W_{l}": arrays[f"W{l}"], f"b_{l}": arrays[f"b{l}"][None, :],
                    f"z_{l}": arrays[f"Z{l}"], f"a_{l}": arrays[f"A{l}"], f"Delta_{l}": arrays[f"D{l}"],
                    f"A_{l}": arrays[f"A{l}"]})
    env["n_0"] = m.inputs

    def close(key, got, want, part="rhs"):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13, err_msg=f"{name}: {key} ({part})")

    for l in range(1, L + 1):
        z = evaluate(d.eq(f"forward.z{l}").rhs, env)
        if l in mod.REGISTER_Z:  # Z_l stays in registers (_mm_relu): the displayed z must give the stored a
            assert not arrays[f"Z{l}"].any()
            env[f"z_{l}"] = z + 0 * arrays[f"A{l}"]
        else:
            close(f"forward.z{l}", z, arrays[f"Z{l}"])
        close(f"forward.a{l}", evaluate(d.eq(f"forward.a{l}").rhs, env) + 0 * arrays[f"Z{l}"], arrays[f"A{l}"])
    element = d.eq("loss.element")
    close("loss.element", evaluate(element.rhs, env) + 0 * element_losses, element_losses)
    close("loss.element", np.mean(evaluate(element.rhs, env)), loss)
    close("loss.element", np.mean(evaluate(element.steps[0], env)), loss, "as defined")
    out = d.eq(f"delta{L}")
    close(out.key, evaluate(out.rhs, env), arrays[f"D{L}"])
    scale = 1 / (N * widths[L])
    if len(out.steps) == 3:  # ∂ℓ/∂a · ∂a/∂z, displayed before the simplified form
        dl, fp, product = (evaluate(s, env) for s in out.steps)
        close(out.key, scale * dl * fp, arrays[f"D{L}"], "steps[0]*steps[1]")
        close(out.key, scale * product + 0 * arrays[f"D{L}"], arrays[f"D{L}"], "steps[2]")
    for l in range(L - 1, 0, -1):
        env[f"e_{l}"] = evaluate(d.eq(f"backward.e{l}").rhs, env)
        np.testing.assert_allclose(env[f"e_{l}"], arrays[f"D{l + 1}"] @ arrays[f"W{l + 1}"].T, rtol=1e-12)
        eq = d.eq(f"delta{l}")
        close(eq.key, evaluate(eq.rhs, env) + 0 * env[f"e_{l}"], arrays[f"D{l}"])
        close(eq.key, env[f"e_{l}"] * evaluate(eq.steps[0], env), arrays[f"D{l}"], "SymPy's raw derivative")
    for l in range(1, L + 1):
        close(f"grad.W{l}", evaluate(d.eq(f"grad.W{l}").rhs, env), arrays[f"gW{l}"])
        close(f"grad.b{l}", evaluate(d.eq(f"grad.b{l}").rhs, env).ravel(), arrays[f"gb{l}"])


def test_displayed_nadam_update_equals_the_update_kernel(derivations):
    """The longest displayed equation (split over two lines) is the one the kernel runs."""
    d = derivations["xor_nadam"]
    mod = importlib.import_module("generated.xor_nadam")
    rng = np.random.default_rng(1)
    theta, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    m_state, v_state = rng.normal(0, 0.1, size=(3, 4)), rng.uniform(0.01, 0.1, size=(3, 4))
    t, prev_product = 4, 0.3
    env = {**mod.HYPER, "t": t, "mu_product": prev_product}
    product = evaluate(d.eq("update.mu_product").rhs, env)
    env.update(mu_product=product, theta=theta, g=g, m=m_state, v=v_state)
    for key in ("update.m", "update.v", "update.theta"):
        eq = d.eq(key)
        env[eq.lhs.name] = evaluate(eq.rhs, env)
    # _update_one takes one parameter array and its state as flat views
    arrays = {"p": theta.ravel().copy(), "q": np.zeros(theta.size), "gr": g.ravel(), "s_m": m_state.ravel().copy(),
              "r_m": np.zeros(theta.size), "s_v": v_state.ravel().copy(), "r_v": np.zeros(theta.size), "t": t,
              "epoch": 0, "mu_product": product, "clip_coef": 1.0, **mod.HYPER}
    arrays["factors"] = call(mod._factors, arrays)
    call(mod._update_one, arrays)
    np.testing.assert_allclose(arrays["q"], env["theta"].ravel(), rtol=1e-12)
    np.testing.assert_allclose(arrays["r_m"], env["m"].ravel(), rtol=1e-12)
    np.testing.assert_allclose(arrays["r_v"], env["v"].ravel(), rtol=1e-12)
    assert any(len(r.lines) > 1 for r in latex.rows(d) if r.tag == "update.theta"), "NAdam's update is not split"


# ----------------------------------------------------------------------------- the documents


def test_document_contents(derivations):
    doc = latex.to_latex(derivations["deep_sigmoid"])
    assert doc.startswith("% Generated by derive") and r"\documentclass" in doc
    assert r"\usepackage{amsmath,amssymb}" in doc
    for title in ("The model", "Forward pass", "Loss", "Output-layer delta", "Backward recursion",
                  "Parameter gradients", "Vanishing gradients", "Optimizer: sgd"):
        assert r"\section{%s}" % title in doc
    assert r"c_{1} = 1 / 4" in doc and r"\frac{1}{256} = 4^{-4}" in doc  # max σ' found symbolically, 4 layers
    assert r"f_{4}'(z_{4}) &= \frac{e^{- z_{4}}}{\left(1 + e^{- z_{4}}\right)^{2}}" in doc  # SymPy's derivative
    assert r"&= a_{4} \left(1 - a_{4}\right)" in doc  # ... and the output form that is computed
    assert r"\delta_{4} &= e_{4} a_{4} \left(1 - a_{4}\right)" in doc
    xor = latex.to_latex(derivations["xor"])
    assert r"\frac{\partial \ell}{\partial a_{2}} &= \frac{y - a_{2}}{a_{2} \left(a_{2} - 1\right)}" in xor
    assert r"&= \frac{a_{2} - y}{N n_{2}} \eqkey{delta2}" in xor  # BCE∘σ simplified jointly
    assert r"&= \operatorname{softplus}\left(z_{2}\right) - y z_{2} \eqkey{loss.element}" in xor  # stable form
    assert r"\theta &\leftarrow \theta - \eta g \eqkey{update.theta}" in xor
    assert "Vanishing gradients" in xor and "Vanishing gradients" not in latex.to_latex(derivations["logistic"])
    reg = latex.to_latex(derivations["xor_regularized"])
    for piece in (r"\eta_{t} &= \eta \gamma^{\left\lfloor{\mathrm{epoch} / s}\right\rfloor}",
                  r"\kappa &= \min\left(1, \frac{c_{\mathrm{norm}}}{\lVert g \rVert + 10^{-6}}\right)",
                  r"g &\leftarrow g + \lambda_{1} \operatorname{sign}{\left(\theta \right)} + \lambda_{2} \theta",
                  r"\text{if } t = 1", "flat regions", r"$1/(1-\mu) = 10$ times"):
        assert piece in reg, piece
    adam = latex.to_latex(derivations["xor_adam"])
    assert r"m &\leftarrow \beta_{1} m + \left(1 - \beta_{1}\right) g" in adam and "combines both ideas" in adam
    assert "its own step size" in latex.to_latex(derivations["xor_rmsprop"])
    assert "its own step size" in latex.to_latex(derivations["xor_adagrad"])


def test_markdown_and_jupyter(derivations):
    d = derivations["xor_nadam"]
    md = latex.to_markdown(d)
    assert md.startswith("# Training equations of `xor_nadam`")
    assert md.count("\n$$\n") == 2 * md.count(r"\begin{aligned}") and r"\eqkey" not in md
    for r in latex.rows(d):
        assert r.lines[0] in md
    assert "| $\\eta$ | `lr` | $0.002$ |" in md
    assert d._repr_markdown_() == md
    math = d._repr_latex_()
    assert math.startswith("$$\n\\begin{aligned}") and math.endswith("\\end{aligned}\n$$")
    assert math.count(r"\leftarrow") == sum(e.kind in ("update", "regularize", "scalar_state") for e in d.equations)


def test_text_formats(derivations):
    d = derivations["xor_regularized"]
    plain = to_text(d, unicode=False)
    assert plain.isascii()
    assert "theta <- theta - lr_t*b" in plain and "g <- g + l1*sign(theta) + l2*theta" in plain
    fancy = to_text(d)
    assert "θ ← θ - ηₜ⋅b" in fancy and "g ← min(c_value, max(g, -c_value))" in fancy


def test_unicode_in_a_description_is_escaped_for_latex():
    assert latex.tex_text("σ' ≤ 1/4 & 50% of x_1 {ok}") == (
        r"$\sigma$' $\le$ 1/4 \& 50\% of x\_1 \{ok\}")
    assert latex.tex_prose("use `a_b` with $x_1$ & more") == r"use \texttt{a\_b} with $x_1$ \& more"


def _outside_math(text: str) -> str:
    """``text`` without its ``$...$`` math (an escaped ``\\$`` is not a delimiter) and ```code```."""
    text = text.replace(r"\$", "")
    return re.sub(r"`[^`]*`", "", "".join(part for k, part in enumerate(text.split("$")) if k % 2 == 0))


def test_dropout_sentence_writes_its_symbols_as_math(derivations):
    d = derivations["breast_cancer"]
    assert d.model.dropout, "breast_cancer is the catalogue's dropout model"
    for doc in (latex.to_latex(d), latex.to_markdown(d)):
        [sentence] = [line for line in doc.splitlines() if "inverted dropout" in line]
        assert "$m_{1} = 0$" in sentence and "$m_{1} = 1$ at prediction" in sentence
        assert "_" not in _outside_math(sentence), f"a symbol outside math (was m\\_1 as text): {sentence}"


def test_no_prose_writes_a_subscripted_symbol_as_text(derivations):
    """Every x_1 / n_{L} in the documents' prose and tables is math ($...$), never escaped text."""
    for name, d in derivations.items():
        for section in latex.document(d)["sections"]:
            for block in section.blocks:
                if block.kind == "text":
                    cells = [block.text]
                elif block.kind == "table":
                    cells = [c for r in [block.header, *block.body] for c in r]
                else:
                    continue
                for text in cells:
                    hit = re.search(r"[A-Za-z0-9}]_\{?\w", _outside_math(text))
                    assert hit is None, f"{name}: {hit.group()!r} outside math in {text!r}"


def test_snapshot_of_the_xor_document(derivations):
    text = latex.to_latex(derivations["xor"])
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_bytes(text.encode("utf-8"))
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing: run {UPDATE_ENV}=1 python -m pytest tests/test_latex.py"
    want = SNAPSHOT.read_bytes().decode("utf-8")
    if text != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(SNAPSHOT),
                                                 "rendered now"))[:60])
        pytest.fail(f"the xor document differs from {SNAPSHOT}. If the change is intended, update the snapshot "
                    f"with `{UPDATE_ENV}=1 python -m pytest tests/test_latex.py` and review its diff.\n{diff}")


# ----------------------------------------------------------------------------- pdflatex


def _require_pdflatex():
    if shutil.which("pdflatex") is None:
        message = ("pdflatex not found: install texlive-latex-base and texlive-latex-recommended "
                   "(.ci/run does this in CI)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_every_catalogue_model_compiles_with_pdflatex(models, tmp_path):
    _require_pdflatex()
    problems = []
    for name, model in models.items():
        tex = latex.write_latex(model, tmp_path / f"{name}.tex")
        pdf = latex.compile_pdf(tex)
        assert pdf.read_bytes().startswith(b"%PDF")
        log = tex.with_suffix(".log").read_text(errors="replace")
        problems += [f"{name}: {line}" for line in log.splitlines()
                     if line.startswith(("Overfull \\hbox", "LaTeX Warning", "Missing character"))]
    assert not problems, "lines that overflow the page or other warnings:\n" + "\n".join(problems)


USER_BLOCKS = """
[activation.swish_beta]
expr = "z * sigmoid(beta * z)"
params = { beta = 1.0 }

[loss.my_log_cosh]
expr = "abs(yhat - y) + log1p(exp(-2*abs(yhat - y))) - log(2)"

[optimizer.adamax_like]
hyper = { lr = 0.002, beta1 = 0.9, beta2 = 0.999, eps = 1e-8 }
state = { m = 0, u = 0 }
update = [["m", "beta1*m + (1 - beta1)*g"], ["u", "max(beta2*u, abs(g) + eps)"],
          ["theta", "theta - lr/(1 - beta1**t) * m/u"]]

[model.custom_net]
description = "User blocks: σ-swish & a log_cosh loss, 100% {declared} in ~text~"
inputs = 3
layers = [[4, "swish_beta", { beta = 1.5 }], [4, "sigmoid"], [1, "identity"]]
loss = "my_log_cosh"
optimizer = "adamax_like"
"""


@pytest.mark.filterwarnings("ignore")
def test_user_declared_blocks_get_a_document_that_compiles(tmp_path):
    from derive import userblocks
    from derive.spec import parse_catalogue

    with userblocks.isolated():
        model = parse_catalogue(USER_BLOCKS, "user.toml")["custom_net"]
        d = derive_model(model)
        doc = latex.to_latex(d)
        assert r"$\beta_{1} = 1.5$" in doc  # the layer's parameter, in the model table
        assert r"User blocks: $\sigma$-swish \& a log\_cosh loss, 100\% \{declared\} in" in doc
        assert "is declared in the spec file" in doc and "squared updates" not in doc  # no built-in meanings
        assert {id(r.source) for r in latex.rows(d) if r.part == "rhs"} == {id(e) for e in d.equations}
        _require_pdflatex()
        tex = latex.write_latex(d, tmp_path / "custom_net.tex")
        latex.compile_pdf(tex)
        log = tex.with_suffix(".log").read_text(errors="replace")
        assert "Overfull \\hbox" not in log and "LaTeX Warning" not in log


# ----------------------------------------------------------------------------- the command line


def test_show_formats():
    default = run("show", "xor")
    assert default.exit_code == 0 and "δ₂ = ──────" in default.output
    assert run("show", "xor", "--format", "unicode").output == default.output
    plain = run("show", "xor", "--format", "text")
    assert plain.exit_code == 0 and plain.output.isascii() and "theta <- theta - lr*g" in plain.output
    tex = run("show", "xor", "--format", "latex")
    assert tex.exit_code == 0 and r"\begin{document}" in tex.output and tex.output.endswith("\\end{document}\n")
    md = run("show", "xor", "--format", "markdown")
    assert md.exit_code == 0 and "$$\n\\begin{aligned}" in md.output
    bad = run("show", "xor", "--format", "html")
    assert bad.exit_code == 2 and "'html' is not one of" in bad.output
    unknown = run("show", "xr", "--format", "latex")
    assert unknown.exit_code == 1 and "did you mean 'xor'?" in unknown.output


def test_latex_writes_one_document(tmp_path, derivations):
    out = tmp_path / "xor.tex"
    result = run("latex", "xor", "-o", str(out))
    assert result.exit_code == 0 and f"wrote {out}" in result.output
    assert out.read_text() == latex.to_latex(derivations["xor"])
    printed = run("latex", "xor")
    assert printed.exit_code == 0 and printed.output == out.read_text()


def test_latex_all_writes_every_model(tmp_path, models):
    out = tmp_path / "docs" / "nested"
    result = run("latex", "--all", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in out.glob("*.tex")) == sorted(models)
    two = run("latex", "xor", "linear", "-o", str(tmp_path / "two"))
    assert two.exit_code == 0 and sorted(p.name for p in (tmp_path / "two").iterdir()) == ["linear.tex", "xor.tex"]


@pytest.mark.parametrize("args,message", [
    ((), "name one or more models, or pass --all"),
    (("xor", "--all", "-o", "d"), "name one or more models, or pass --all (not both)"),
    (("--all",), "-o is required with --all"),
    (("xor", "--pdf"), "-o is required with --all, --pdf"),
])
def test_latex_usage_errors(args, message):
    result = run("latex", *args)
    assert result.exit_code == 2 and message in result.output


def test_latex_errors(tmp_path, monkeypatch):
    unknown = run("latex", "xr", "-o", str(tmp_path / "x.tex"))
    assert unknown.exit_code == 1 and "no model 'xr' in the catalogue; did you mean 'xor'?" in unknown.output
    missing = run("latex", "xor", "-o", str(tmp_path / "no" / "such" / "x.tex"))
    assert missing.exit_code == 1 and f"the folder {tmp_path / 'no' / 'such'} does not exist" in missing.output
    folder = run("latex", "xor", "-o", str(tmp_path))
    assert folder.exit_code == 1 and "is a folder; give a file name such as" in folder.output
    a_file = tmp_path / "file"
    a_file.write_text("")
    not_dir = run("latex", "--all", "-o", str(a_file))
    assert not_dir.exit_code == 1 and f"cannot create the folder {a_file}" in not_dir.output

    def refuse(self, *args, **kwargs):  # root ignores permissions: refuse the write itself
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)
    denied = run("latex", "xor", "-o", str(tmp_path / "x.tex"))
    assert denied.exit_code == 1 and f"cannot write {tmp_path / 'x.tex'}: Permission denied" in denied.output
    assert "Traceback" not in denied.output


def test_pdf_without_pdflatex_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out = tmp_path / "xor.tex"
    result = run("latex", "xor", "-o", str(out), "--pdf")
    assert result.exit_code == 1
    assert "pdflatex not found; install texlive-latex-base" in result.output
    assert out.exists() and not out.with_suffix(".pdf").exists()  # the .tex is still there to compile later


def test_pdf_failure_reports_the_latex_error(tmp_path, monkeypatch):
    fake = tmp_path / "pdflatex"  # writes the log of a failed run, as pdflatex does, and fails
    fake.write_text(f"#!{sys.executable}\n"
                    "import sys, pathlib\n"
                    "out = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('-output-directory='))\n"
                    "log = pathlib.Path(out, pathlib.Path(sys.argv[-1]).stem + '.log')\n"
                    "log.write_text(\"This is pdfTeX\\n! LaTeX Error: File `missing.sty' not found.\\n\")\n"
                    "sys.exit(1)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(fake))
    result = run("latex", "xor", "-o", str(tmp_path / "xor.tex"), "--pdf")
    assert result.exit_code == 1
    assert "pdflatex failed on" in result.output and "! LaTeX Error: File `missing.sty' not found." in result.output


def test_pdf_is_compiled(tmp_path):
    _require_pdflatex()
    out = tmp_path / "deep_sigmoid.tex"
    result = run("latex", "deep_sigmoid", "-o", str(out), "--pdf")
    assert result.exit_code == 0, result.output
    assert f"wrote {out.with_suffix('.pdf')}" in result.output
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep_sigmoid.log", "deep_sigmoid.pdf", "deep_sigmoid.tex"]


def test_printer_keeps_the_expression():
    """Printing reorders terms for reading; the expression itself is untouched."""
    theta, lr, g = sp.Symbol("theta", real=True), sp.Symbol("lr", positive=True), sp.Symbol("g", real=True)
    expr = theta - lr * g
    before = sp.srepr(expr)
    assert latex.tex(expr, pivot=theta) == r"\theta - \eta g"
    assert sp.srepr(expr) == before
    assert latex.tex(sp.Float("1e-6")) == "10^{-6}" and latex.tex(sp.Float("2.5e-7")) == r"2.5 \cdot 10^{-7}"
    assert latex.tex(Softplus(sp.Symbol("z"))) == r"\operatorname{softplus}\left(z\right)"
    assert latex.tex(Sigmoid(sp.Symbol("z"))) == r"\sigma\left(z\right)"
