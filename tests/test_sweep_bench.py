"""derive bench --sweep: derive's train_many, JAX vmap and torch.func vmap compute the same runs."""

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("torch")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sweep_peers_agree_per_run(optimizer):
    from benchmarks.sweep_bench import check

    lines = check(configs=("tiny",), K=4, steps=5, rtol=1e-6, optimizers=(optimizer,))
    assert len(lines) == 3  # derive-seq, jax-vmap, torch-vmap each equal train_many's losses per run
    assert all(f"tiny {optimizer} float64" in line for line in lines)


def test_sweep_adam_is_torch_optim_adam():
    """The vectorised Adam of the torch peer (which the check compares derive and JAX with) is
    torch.optim.Adam with the benchmark's betas and eps, run by run, each with its own lr."""
    import torch

    from benchmarks.configs import OPTIMIZERS
    from benchmarks.sweep_bench import _bce_np, make_torch, problem

    K, steps = 3, 5
    config, inits, lrs, X, Y = problem("tiny", "float64", K, steps, "adam")
    assert np.allclose(lrs, np.geomspace(1e-3, 3e-2, K))
    run, _fresh, result = make_torch(config, inits, lrs, X, Y, optimizer="adam")
    losses, finals = result(run())
    spec = OPTIMIZERS["adam"]
    B = config.batch
    for k in range(K):
        ps = [torch.tensor(a, requires_grad=True) for pair in inits[k] for a in pair]
        opt = torch.optim.Adam(ps, lr=float(lrs[k]), betas=spec.betas, eps=spec.eps)
        total = 0.0
        for s in range(steps):
            x, y = torch.from_numpy(X[s * B:(s + 1) * B]), torch.from_numpy(Y[s * B:(s + 1) * B])
            z = torch.tanh(x @ ps[0] + ps[1]) @ ps[2] + ps[3]
            lv = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
            opt.zero_grad()
            lv.backward()
            opt.step()
            total += lv.item()
        assert losses[k] == pytest.approx(total / steps, rel=1e-12)
        want = _bce_np(config, [(ps[0].detach().numpy(), ps[1].detach().numpy()),
                                (ps[2].detach().numpy(), ps[3].detach().numpy())], X, Y)
        assert _bce_np(config, finals[k], X, Y) == pytest.approx(want, rel=1e-12)


def test_sweep_table_has_optimizer_column():
    from benchmarks.sweep_bench import table

    results = {(peer, opt, "tiny", "float32", 64): [0.01 if peer == "derive" else 0.02]
               for peer in ("derive", "jax-vmap") for opt in ("sgd", "adam")}
    md = table(results, ["tiny"], ["float32"], [64], 200, ["derive", "jax-vmap"], ["sgd", "adam"])
    rows = md.splitlines()
    assert rows[0].startswith("| network | optimizer | dtype | K | derive | jax-vmap |")
    assert len(rows) == 4
    assert "| sgd | float32 | 64 | 1.280 | 0.640 | 2.00× | 2.00× |" in rows[2]
    assert "| adam | float32 | 64 |" in rows[3]
