"""The benchmark harness: FLOP counts, the NumPy peer's maths, the report, skipped/crashing peers.

None of these needs torch or jax, and none depends on timing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from benchmarks import harness, report, timing
from benchmarks.configs import CONFIGS, OPTIMIZERS, Config, flops_per_step, init_params, make_batches
from benchmarks.peers.numpy_peer import NumpyMLP
from benchmarks.worker import run_job

# --------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize(
    "name, expected",
    [
        # 3 * (forward, dW, dA per layer) minus layer 1's dA; 2*B*n_in*n_out each
        ("tiny", 3 * (2 * 32 * 2 * 8 + 2 * 32 * 8 * 1) - 2 * 32 * 2 * 8),  # 3,584
        ("small", 3 * (2 * 64 * 10 * 32 + 2 * 64 * 32 * 1) - 2 * 64 * 10 * 32),  # 94,208
        ("medium", 2 * 128 * (3 * (64 * 128 + 128 * 128 + 128) - 64 * 128)),
        ("large", 2 * 256 * (3 * (784 * 512 + 512 * 256 + 256 * 10) - 784 * 512)),
        ("multiclass", 3 * (2 * 64 * 64 * 128 + 2 * 64 * 128 * 10) - 2 * 64 * 64 * 128),
    ],
)
def test_flops_per_step_matches_hand_count(name, expected):
    assert flops_per_step(CONFIGS[name]) == expected


def test_flops_literal_values():
    assert flops_per_step(CONFIGS["tiny"]) == 3_584
    assert flops_per_step(CONFIGS["small"]) == 94_208
    assert flops_per_step(CONFIGS["medium"]) == 16_875_520
    assert flops_per_step(CONFIGS["large"]) == 616_300_544
    assert flops_per_step(CONFIGS["multiclass"]) == 2_588_672


# --------------------------------------------------------------------------- NumPy peer maths

TEST_CONFIGS = [
    CONFIGS["tiny"],
    Config("deep", (3, 5, 4, 2), ("relu", "tanh", "sigmoid"), "mse", 6),
    Config("ident", (3, 4, 2), ("sigmoid", "identity"), "mse", 5),
    Config("bce2", (4, 3, 2), ("tanh", "sigmoid"), "bce", 7),
    Config("softmax3", (4, 5, 3), ("relu", "softmax"), "cross_entropy", 6),
    Config("softmax_deep", (3, 4, 5, 4), ("tanh", "sigmoid", "softmax"), "cross_entropy", 5),
]


def reference_loss(config: Config, params, x, y) -> float:
    """Straightforward loss, written independently of the peer (the test oracle)."""
    f = {
        "relu": lambda z: np.maximum(z, 0),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "identity": lambda z: z,
    }
    a = x
    for (w, b), act in zip(params[:-1], config.activations[:-1], strict=True):
        a = f[act](a @ w + b)
    z = a @ params[-1][0] + params[-1][1]
    if config.loss == "cross_entropy":  # -log softmax at the targets, mean over the rows
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return float(np.mean(-(y * np.log(p)).sum(axis=1)))
    if config.loss == "bce":
        p = f["sigmoid"](z)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    return float(np.mean((f[config.activations[-1]](z) - y) ** 2))


def unflatten(config: Config, flat: np.ndarray):
    out, off = [], 0
    for n_in, n_out in config.layers:
        w = flat[off : off + n_in * n_out].reshape(n_in, n_out)
        off += n_in * n_out
        b = flat[off : off + n_out]
        off += n_out
        out.append((w, b))
    return out


def fd_gradient(config: Config, flat: np.ndarray, x, y, eps: float = 1e-6) -> np.ndarray:
    g = np.empty_like(flat)
    for i in range(flat.size):
        p, m = flat.copy(), flat.copy()
        p[i] += eps
        m[i] -= eps
        up = reference_loss(config, unflatten(config, p), x, y)
        down = reference_loss(config, unflatten(config, m), x, y)
        g[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("config", TEST_CONFIGS, ids=lambda c: c.name)
def test_numpy_sgd_step_is_minus_lr_times_fd_gradient(config):
    params = init_params(config, "float64", seed=3)
    x, y = make_batches(config, "float64", seed=3, n=1)[0]
    model = NumpyMLP(config, "float64", params, OPTIMIZERS["sgd"])
    before = model.flat.copy()
    fd = fd_gradient(config, before, x, y)

    loss = model.step(x, y)

    assert loss == pytest.approx(reference_loss(config, params, x, y), rel=1e-12)
    lr = OPTIMIZERS["sgd"].lr
    np.testing.assert_allclose(model.flat - before, -lr * fd, rtol=1e-6, atol=1e-11)


def test_numpy_bce_from_logits_is_stable_for_huge_logits():
    config = Config("huge", (1, 1), ("sigmoid",), "bce", 2)
    model = NumpyMLP(config, "float64", [(np.array([[1.0]]), np.array([0.0]))], OPTIMIZERS["sgd"])
    x = np.array([[1e9], [-1e9]])
    y = np.array([[0.0], [1.0]])
    loss, g = model.gradient(x, y)
    assert loss == pytest.approx(1e9)  # both examples maximally wrong: |z| each, mean 1e9
    assert np.all(np.isfinite(g))


def test_numpy_cross_entropy_is_stable_for_huge_logits():
    config = Config("huge_ce", (1, 3), ("softmax",), "cross_entropy", 2)
    w = np.array([[1.0, -1.0, 0.0]])
    model = NumpyMLP(config, "float32", [(w, np.zeros(3))], OPTIMIZERS["sgd"])
    x = np.array([[1e4], [-1e4]], dtype=np.float32)
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    loss, g = model.gradient(x, y)
    assert loss == pytest.approx(2e4)  # both rows: the target's logit 2e4 below the largest
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(model.A[-1]))


def test_cross_entropy_config_has_one_hot_targets_and_refuses_other_pairings():
    config = CONFIGS["multiclass"]
    assert config.describe() == "64-128-10 relu/softmax CE b64"
    for x, y in make_batches(config, "float32", seed=0, n=4):
        assert x.shape == (64, 64) and y.shape == (64, 10) and y.dtype == np.float32
        assert set(np.unique(y)) == {0.0, 1.0} and np.all(y.sum(axis=1) == 1.0)
    for sizes, acts, loss in (((3, 2), ("softmax",), "mse"), ((3, 2), ("sigmoid",), "cross_entropy"),
                              ((3, 4, 2), ("softmax", "softmax"), "cross_entropy")):
        with pytest.raises(ValueError, match="softmax"):
            Config("bad", sizes, acts, loss, 4)


def test_numpy_adam_follows_the_adam_equations():
    config = TEST_CONFIGS[1]
    spec = OPTIMIZERS["adam"]
    lr, (b1, b2), eps = spec.lr, spec.betas, spec.eps
    params = init_params(config, "float64", seed=5)
    batches = make_batches(config, "float64", seed=5, n=2)
    model = NumpyMLP(config, "float64", params, spec)
    probe = NumpyMLP(config, "float64", params, OPTIMIZERS["sgd"])  # gradient oracle, never stepped

    p = model.flat.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (x, y) in enumerate(batches, start=1):
        probe.flat[...] = p
        _, g = probe.gradient(x, y)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        model.step(x, y)
        np.testing.assert_allclose(model.flat, p, rtol=1e-12, atol=1e-15)
    # after one step Adam moves every parameter with a non-zero gradient by about lr
    assert t == 2


def test_numpy_float32_keeps_float32():
    config = CONFIGS["small"]
    model = NumpyMLP(config, "float32", init_params(config, "float32", 0), OPTIMIZERS["adam"])
    x, y = make_batches(config, "float32", 0, n=1)[0]
    model.step(x, y)
    assert model.flat.dtype == np.float32 and model.m.dtype == np.float32


# --------------------------------------------------------------------------- report


def fake_results():
    base = dict(config="tiny", optimizer="sgd", dtype="float64", flops=1_000_000, describe="2-8-1")
    rows = [
        dict(
            peer="gemm",
            config=None,
            optimizer=None,
            dtype="float64",
            status="ok",
            gflops=100.0,
            median_s=0.1,
            p10_s=0.1,
            p90_s=0.1,
        ),
        dict(base, peer="derive", status="skipped", reason="benchmarks/peers/derive_peer.py not found"),
        dict(
            base,
            peer="numpy",
            status="ok",
            median_s=100e-6,
            p10_s=90e-6,
            p90_s=110e-6,
            first_loss=0.5,
            first_call_s=0.01,
        ),
        dict(base, peer="torch_eager", status="ok", median_s=200e-6, p10_s=190e-6, p90_s=210e-6, first_loss=0.5),
        dict(base, peer="jax_step", status="ok", median_s=50e-6, p10_s=45e-6, p90_s=55e-6, first_loss=0.5),
        dict(base, peer="jax_scan", status="error", error="RuntimeError: boom"),
    ]
    return rows


def test_speedup_is_best_other_over_own():
    sp = report.speedups({"numpy": 100e-6, "torch_eager": 200e-6, "jax_step": 50e-6})
    assert sp["jax_step"] == (pytest.approx(2.0), "numpy")
    assert sp["numpy"] == (pytest.approx(0.5), "jax_step")
    assert sp["torch_eager"] == (pytest.approx(0.25), "jax_step")
    assert report.speedups({"alone": 1.0}) == {"alone": None}


def test_report_table_from_fake_results():
    text = report.format_report(fake_results(), {"cpu": "Test CPU", "cores": 2, "date": "today", "command": "x"})
    assert "Test CPU, 2 cores" in text
    assert "float64: 100.0 GFLOP/s" in text
    # 1e6 FLOP in 100 µs = 10 GFLOP/s = 10 % of the 100 GFLOP/s GEMM rate
    assert "| numpy | 100.0 | 90.0 – 110.0 | 10.0 | 10.0 % | 0.50× (jax_step) | 0.01 |" in text
    assert "| jax_step | 50.0 | 45.0 – 55.0 | 20.0 | 20.0 % | 2.00× (numpy) |" in text
    assert "| torch_eager | 200.0 | 190.0 – 210.0 | 5.0 | 5.0 % | 0.25× (jax_step) |" in text
    assert "| jax_scan | error: RuntimeError: boom |" in text
    assert "Skipped: derive (benchmarks/peers/derive_peer.py not found)" in text
    # summary: fastest in bold, skipped-only peers left out of the columns
    assert "| tiny | sgd | float64 | 100.0 | 200.0 | **50.0** | error | jax_step |" in text
    assert "Peers agree on: first-step loss 0.5" in text


def test_bound_peer_is_shown_but_never_the_best_and_gives_each_step_its_share():
    rows = fake_results()
    bound = dict(rows[2], peer="matmuls", median_s=40e-6, p10_s=39e-6, p90_s=41e-6, first_loss=None)
    text = report.format_report([*rows, bound], {})
    # the fastest real step stays the best peer and the summary's fastest
    assert "| jax_step | 50.0 | 45.0 – 55.0 | 20.0 | 20.0 % | 2.00× (numpy) |" in text
    assert "| matmuls | 40.0 | 39.0 – 41.0 | 25.0 | 25.0 % | bound, not a step |" in text
    assert "| tiny | sgd | float64 | 100.0 | 200.0 | **50.0** | error | 40.0 | jax_step |" in text
    assert ("take 40.0 µs; their share of each peer's step: numpy 40 % (60.0 µs outside them), "
            "torch_eager 20 % (160.0 µs outside them), jax_step 80 % (10.0 µs outside them).") in text
    bound["median_s"] = 60e-6  # a peer faster than NumPy's matmuls: said so, not a negative time
    assert "jax_step 120 % (its products beat NumPy's BLAS here)" in report.format_report([*rows, bound], {})


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matmuls_bound_runs_exactly_the_products_the_flop_count_counts(name):
    from benchmarks.peers import matmuls

    step = matmuls.products(CONFIGS[name], "float32", seed=0)
    assert len(step) == 3 * len(CONFIGS[name].layers) - 1
    for a, b, out in step:
        assert a.shape[1] == b.shape[0] and out.shape == (a.shape[0], b.shape[1]) and out.dtype == np.float32
    assert sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in step) == flops_per_step(CONFIGS[name])


def test_matmuls_bound_times_the_products_of_a_step():
    from benchmarks.peers import matmuls

    res = matmuls.measure(CONFIGS["medium"], "sgd", "float32", steps=2, repeats=3, seed=0)
    assert res["median_s"] > 0 and res["first_loss"] is None
    assert "the 8 products of one step" in res["note"]


def test_plan_runs_the_matmuls_bound_only_where_matmuls_dominate():
    jobs = harness.plan(harness.build_parser().parse_args(["--peers", "numpy,matmuls", "--dtypes", "float64"]))
    bound = {(j["config"]["name"], j["optimizer"]) for j in jobs if j["peer"] == "matmuls"}
    assert bound == {(c, o) for c in ("medium", "large", "multiclass") for o in ("sgd", "adam")}
    assert sum(j["peer"] == "numpy" for j in jobs) == 2 * len(CONFIGS)


def test_report_flags_disagreeing_losses_and_disturbed_runs():
    rows = fake_results()
    rows[3]["first_loss"] = 0.6
    rows[4]["foreign_load"] = 0.9
    text = report.format_report(rows, {})
    assert "**first-step loss disagrees** with numpy (0.5): torch_eager 0.6" in text
    assert "| jax_step | 50.0 † |" in text


# --------------------------------------------------------------------------- skipped / crashing peers


@pytest.fixture
def fake_peers(tmp_path, monkeypatch):
    """Two peer modules on sys.path (and on the workers' PYTHONPATH): one missing, one crashing."""
    (tmp_path / "fake_missing_peer.py").write_text(
        textwrap.dedent(
            """
            NAME = "missing"
            def available():
                return "fakelib not installed"
            def measure(*a, **k):
                raise AssertionError("must not be called")
            """
        )
    )
    (tmp_path / "fake_crash_peer.py").write_text(
        textwrap.dedent(
            """
            NAME = "crash"
            def available():
                return None
            def measure(config, optimizer, dtype, *, steps, repeats, seed):
                raise RuntimeError("kernel exploded\\nsecond line")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def _job(peer, module, config="tiny"):
    return dict(
        peer=peer,
        module=module,
        config=CONFIGS[config].to_json(),
        optimizer="sgd",
        dtype="float64",
        steps=2,
        repeats=2,
        seed=0,
    )


def test_worker_reports_unavailable_peer_as_skipped(fake_peers):
    res = run_job(_job("missing", "fake_missing_peer"))
    assert res["status"] == "skipped" and res["reason"] == "fakelib not installed"


def test_worker_reports_crash_with_its_error_line(fake_peers):
    res = run_job(_job("crash", "fake_crash_peer"))
    assert res["status"] == "error"
    assert res["error"] == "RuntimeError: kernel exploded"


def test_harness_skips_missing_module_and_unavailable_peer_and_goes_on(fake_peers):
    jobs = [
        _job("derive", "benchmarks.peers.no_such_peer_module"),
        _job("missing", "fake_missing_peer"),
        _job("missing", "fake_missing_peer", config="small"),
        _job("crash", "fake_crash_peer"),
        _job("numpy", "benchmarks.peers.numpy_peer"),
    ]
    logs = []
    res = harness.run_jobs(jobs, timeout=60, log=logs.append)
    status = [r["status"] for r in res]
    assert status == ["skipped", "skipped", "skipped", "error", "ok"]
    assert res[0]["reason"] == "benchmarks/peers/no_such_peer_module.py not found"
    assert res[1]["reason"] == res[2]["reason"] == "fakelib not installed"
    assert "attempts" not in res[2]  # the second group of an unavailable peer starts no process
    assert res[3]["error"] == "RuntimeError: kernel exploded"
    assert res[4]["median_s"] > 0 and res[4]["flops"] == 3_584
    assert len(logs) == 5


def test_main_end_to_end_with_numpy_only(tmp_path):
    out = tmp_path / "r.md"
    rc = harness.main(
        [
            "--configs",
            "tiny",
            "--dtypes",
            "float64",
            "--optimizers",
            "adam",
            "--peers",
            "numpy",
            "--no-gemm",
            "--steps",
            "3",
            "--repeats",
            "3",
            "--wait-budget",
            "0",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = out.read_text()
    assert "### tiny · adam · float64" in text and "| numpy |" in text


def test_main_rejects_unknown_names(capsys):
    assert harness.main(["--configs", "huge", "--out", "/dev/null"]) == 2
    assert "unknown config: huge" in capsys.readouterr().err


def test_quick_plan_is_tiny_small_float64():
    jobs = harness.plan(harness.build_parser().parse_args(["--quick"]))
    step_jobs = [j for j in jobs if j["config"] is not None]
    assert {j["config"]["name"] for j in step_jobs} == {"tiny", "small"}
    assert {j["dtype"] for j in jobs} == {"float64"}
    assert jobs[0]["peer"] == "gemm"


def test_harness_never_imports_torch_or_jax():
    code = (
        "import sys, benchmarks.harness, benchmarks.peers.torch_eager, benchmarks.peers.jax_scan; "
        "print(sorted(m for m in ('torch', 'jax', 'optax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=harness.REPO_ROOT
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- timing and busy machines


def test_time_blocks_records_losses_and_stops_early_past_max_seconds():
    calls = []

    def run_block(k):
        calls.append(k)
        n = len(calls)
        return lambda: float(n)  # "loss" = block number, read lazily

    out = timing.time_blocks(run_block, steps=4, repeats=50, max_seconds=0.0)
    assert calls == [4] * 5  # first block, one warm-up block, then the minimum of 3 repeats
    assert out["repeats"] == 3 and out["steps"] == 4
    assert out["first_loss"] == 1.0 and out["loss_after_steps"] == 2.0
    assert out["p10_s"] <= out["median_s"] <= out["p90_s"]


def test_percentile_interpolates():
    assert timing.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 10) == pytest.approx(1.4)
    assert timing.percentile([7.0], 90) == 7.0


def test_disturbed_measurement_is_rerun_later_and_the_quieter_one_kept(monkeypatch):
    loads = iter([0.9, 0.1])
    calls = []

    def fake_worker(job, timeout):
        calls.append(job["peer"])
        return {"status": "ok", "median_s": 1e-3 * len(calls), "p10_s": 1e-3, "p90_s": 1e-3}

    monkeypatch.setattr(harness, "run_worker", fake_worker)
    monkeypatch.setattr(harness.LoadMeter, "foreign", lambda self, a, b: next(loads))
    jobs = [_job("numpy", "benchmarks.peers.numpy_peer")]
    patience = harness.Patience(wait_idle_s=0.0, retries=1, budget_s=60.0)
    res = harness.run_jobs(jobs, timeout=10, log=lambda m: None, patience=patience)
    assert calls == ["numpy", "numpy"]
    assert res[0]["foreign_load"] == 0.1 and res[0]["attempts"] == 2 and res[0]["median_s"] == 2e-3
