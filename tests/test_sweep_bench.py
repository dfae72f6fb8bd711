"""derive bench --sweep: derive's train_many, JAX vmap and torch.func vmap compute the same runs."""

import pytest

pytest.importorskip("numba")
pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("torch")


def test_sweep_peers_agree_per_run():
    from benchmarks.sweep_bench import check

    lines = check(configs=("tiny",), K=4, steps=5, rtol=1e-6)
    assert len(lines) == 3  # derive-seq, jax-vmap, torch-vmap each equal train_many's losses per run
