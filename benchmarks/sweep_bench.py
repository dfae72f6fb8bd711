"""``python -m benchmarks.sweep_bench`` / ``derive bench --sweep``: many runs per call.

K runs of one benchmark network (``tiny``, ``small`` from :mod:`benchmarks.configs`), each with
its own initial parameters (``init_params(config, dtype, seed=k)``) and its own learning rate,
``steps`` steps each on the same sequence of mini-batches (the config's batch size, the
benchmark's pool of batches in order: no shuffling anywhere, so every peer computes exactly the
same thing), with each optimizer of ``--optimizers`` (default ``sgd,adam``):

* ``sgd``  -- plain SGD (``torch.optim.SGD`` without momentum), learning rates log-spaced in
  0.01..0.3;
* ``adam`` -- ``torch.optim.Adam`` semantics with the benchmark's settings
  (``OPTIMIZERS["adam"]`` of :mod:`benchmarks.configs`: betas, eps; bias correction, eps added
  after the square root), learning rates log-spaced in 1e-3..3e-2.

Peers:

* ``derive``      -- ONE ``train_many(params_list, states, X, Y, epochs=1, batch_size=B,
  seeds=[...], shuffle=False, lr=[K values])`` call of the generated module
  (``module_for(config, optimizer)``);
* ``derive-seq``  -- K sequential ``train`` calls of the same module;
* ``jax-vmap``    -- ``jit(vmap(run))`` with ``run`` a ``lax.scan`` over the steps (one call for
  all runs; compile excluded; ``block_until_ready``); the SGD / Adam update written out with a
  per-run learning rate;
* ``torch-vmap``  -- ``torch.func``: ``stack_module_state`` of K modules, ``vmap(grad(loss))``
  with ``functional_call`` per step, the SGD / Adam update vectorised over the run axis.

Each (peer, optimizer, config, dtype) is timed in its own fresh subprocess (thread pools of different
libraries fight over the cores otherwise), peers interleaved, ``--rounds`` rounds; each
subprocess times ``--repeats`` calls per K after a warm-up call. Reported: median run-steps per
second (K * steps / seconds): the median over rounds of each round's median, and derive / best
peer.

Before timing, :func:`check` trains K=4 runs a few steps in float64 with derive's
``train_many``, JAX vmap and torch vmap (and sequential ``train``), for each optimizer, and
asserts that each run's mean step loss and final loss agree to rtol 1e-6.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.configs import CONFIGS, OPTIMIZERS, init_params, make_batches

PEERS = ("derive", "derive-seq", "jax-vmap", "torch-vmap")
SWEEP_CONFIGS = ("tiny", "small")
SWEEP_OPTIMIZERS = ("sgd", "adam")
#: per optimizer: (lowest, highest) learning rate of the K runs (log-spaced), and the one of K = 1
LR_RANGES = {"sgd": (0.01, 0.3, 0.05), "adam": (1e-3, 3e-2, 5e-3)}
DATA_SEED = 0


# --------------------------------------------------------------------------- the problem

def problem(config_name: str, dtype: str, K: int, steps: int, optimizer: str = "sgd"):
    """(config, inits, lrs, X, Y): K initial [(W, b), ...], K learning rates, and the
    ``steps * B`` rows of the pool's batches in order (tiled)."""
    config = CONFIGS[config_name]
    inits = [init_params(config, dtype, seed=k) for k in range(K)]
    # each run its own learning rate, log-spaced in the optimizer's range (SGD 0.01..0.3, Adam 1e-3..3e-2)
    lo, hi, one = LR_RANGES[optimizer]
    lrs = np.geomspace(lo, hi, K) if K > 1 else np.array([one])
    X, Y = batch_rows(config, dtype, steps)
    return config, inits, lrs, X, Y


def batch_rows(config, dtype: str, steps: int):
    """(X, Y): the rows of ``steps`` batches of the benchmark's pool, in order (the pool repeated)."""
    pool = make_batches(config, dtype, DATA_SEED)
    batches = [pool[i % len(pool)] for i in range(steps)]
    X = np.ascontiguousarray(np.concatenate([x for x, _ in batches]))
    Y = np.ascontiguousarray(np.concatenate([y for _, y in batches]))
    return X, Y


def _bce_np(config, pairs, X, Y) -> float:
    """The final loss at ``pairs`` over all rows, float64 NumPy (BCE with logits)."""
    acts = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z))}
    a = X.astype(np.float64)
    for (w, b), act in zip(pairs[:-1], config.activations[:-1], strict=True):
        a = acts[act](a @ np.asarray(w, np.float64) + np.asarray(b, np.float64))
    w, b = pairs[-1]
    z = a @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    y = Y.astype(np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


# --------------------------------------------------------------------------- peers
# each make_<peer>(config, inits, lrs, X, Y, optimizer) returns (run, fresh, result): run() trains
# from the initial parameters (or from fresh()'s copy of them), result(run()) is (mean step loss
# per run, final [(W, b), ...] per run).

def _adam_spec(optimizer):
    if optimizer not in SWEEP_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(SWEEP_OPTIMIZERS)}")
    spec = OPTIMIZERS[optimizer]
    return spec.betas[0], spec.betas[1], spec.eps


def make_derive(config, inits, lrs, X, Y, optimizer="sgd", sequential=False):
    from benchmarks.peers._derive_common import module_for, params_from

    _adam_spec(optimizer)  # (validates the name; derive's module carries the betas and eps)
    module = module_for(config, optimizer)
    B = config.batch
    K = len(inits)
    nl = len(config.layers)

    def fresh():
        ps = [params_from(module, pairs) for pairs in inits]
        return ps, [module.init_state(p) for p in ps]

    def run(prepared=None):
        ps, sts = prepared if prepared is not None else fresh()
        if sequential:
            res = [module.train(ps[k], sts[k], X, Y, epochs=1, batch_size=B, seed=k, shuffle=False,
                                grad_norms=False, lr=float(lrs[k])) for k in range(K)]
        else:
            res = module.train_many(ps, sts, X, Y, epochs=1, batch_size=B, seeds=list(range(K)), shuffle=False,
                                    grad_norms=False, lr=[float(v) for v in lrs])
        return res, ps

    def result(out):
        res, ps = out
        losses = np.array([r["loss"][-1] for r in res])
        finals = [[(p[f"W{i}"], p[f"b{i}"]) for i in range(1, nl + 1)] for p in ps]
        return losses, finals

    return run, fresh, result


def make_jax(config, inits, lrs, X, Y, optimizer="sgd"):
    import jax
    import jax.numpy as jnp

    from benchmarks.peers import _jax_common as jc

    dtype = X.dtype.name
    jc.setup(dtype)
    loss_fn = jc.make_loss(config)
    B = config.batch
    steps = X.shape[0] // B
    Xs = jnp.asarray(X.reshape(steps, B, -1))
    Ys = jnp.asarray(Y.reshape(steps, B, -1))
    params = [(jnp.asarray(np.stack([p[i][0] for p in inits])), jnp.asarray(np.stack([p[i][1] for p in inits])))
              for i in range(len(config.layers))]
    lr = jnp.asarray(lrs, dtype=dtype)
    b1, b2, eps = _adam_spec(optimizer)
    tree_map = jax.tree_util.tree_map

    def one_run(params, lr, Xs, Ys):
        if optimizer == "sgd":
            def step(p, xy):
                loss, g = jax.value_and_grad(loss_fn)(p, *xy)
                return tree_map(lambda a, b: a - lr * b, p, g), loss

            p, losses = jax.lax.scan(step, params, (Xs, Ys))
            return jnp.mean(losses), p

        # Adam as torch.optim.Adam: m, v moments, bias correction, eps added after the sqrt
        def adam_step(carry, xyt):
            p, m, v = carry
            x, y, t = xyt
            loss, g = jax.value_and_grad(loss_fn)(p, x, y)
            m = tree_map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
            v = tree_map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
            step_size = lr / (1 - b1 ** t)
            bc2_sqrt = jnp.sqrt(1 - b2 ** t)
            p = tree_map(lambda p_, m_, v_: p_ - step_size * m_ / (jnp.sqrt(v_) / bc2_sqrt + eps), p, m, v)
            return (p, m, v), loss

        zeros = tree_map(jnp.zeros_like, params)
        ts = jnp.arange(1, Xs.shape[0] + 1, dtype=dtype)
        (p, _m, _v), losses = jax.lax.scan(adam_step, (params, zeros, zeros), (Xs, Ys, ts))
        return jnp.mean(losses), p

    f = jax.jit(jax.vmap(one_run, in_axes=(0, 0, None, None)))
    f.lower(params, lr, Xs, Ys).compile()  # compile outside the timing
    f(params, lr, Xs, Ys)[0].block_until_ready()

    def run(prepared=None):
        out = f(params, lr, Xs, Ys)
        jax.block_until_ready(out)
        return out

    def result(out):
        losses, p = out
        K = len(inits)
        return np.asarray(losses), [[(np.asarray(w[k]), np.asarray(b[k])) for w, b in p] for k in range(K)]

    return run, (lambda: None), result


def make_torch(config, inits, lrs, X, Y, optimizer="sgd"):
    import torch
    from torch import nn
    from torch.func import functional_call, grad, stack_module_state, vmap

    # one thread: on the shared 2-core machine two OpenMP threads made a tiny vmapped step ~7x slower
    torch.set_num_threads(1)
    tdt = getattr(torch, X.dtype.name)
    acts = {"tanh": nn.Tanh, "relu": nn.ReLU}
    B = config.batch
    steps = X.shape[0] // B
    K = len(inits)

    def module(pairs):
        layers = []
        for i, (w, b) in enumerate(pairs):
            lin = nn.Linear(*w.shape, dtype=tdt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(pairs) - 1:
                layers.append(acts[config.activations[i]]())
        return nn.Sequential(*layers)  # the output is the logits (BCE with logits)

    models = [module(pairs) for pairs in inits]
    base = module(inits[0]).to("meta")
    Xs = torch.from_numpy(X.reshape(steps, B, -1))
    Ys = torch.from_numpy(Y.reshape(steps, B, -1))
    lr = torch.tensor(lrs, dtype=tdt)

    def loss(p, x, y):
        z = functional_call(base, (p,), (x,))
        lv = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        return lv, lv

    vgrad = vmap(grad(loss, has_aux=True), in_dims=(0, None, None))

    def fresh():
        params, _ = stack_module_state(models)
        return {k: v.detach().clone() for k, v in params.items()}

    b1, b2, eps = _adam_spec(optimizer)
    lr_of = {}  # per-run learning rates shaped to broadcast over each parameter's run axis

    def lr_view(v):
        if v.dim() not in lr_of:
            lr_of[v.dim()] = lr.view(-1, *([1] * (v.dim() - 1)))
        return lr_of[v.dim()]

    def run_sgd(params):
        total = torch.zeros(K, dtype=tdt)
        with torch.no_grad():
            for s in range(steps):
                g, lv = vgrad(params, Xs[s], Ys[s])
                total += lv
                for k, v in params.items():
                    v.sub_(lr_view(v) * g[k])
        return total / steps, params

    def run_adam(params):
        # torch.optim.Adam's single-tensor update (lerp_ / addcmul_, bias correction, eps after the
        # sqrt), each state tensor carrying the run axis first and a per-run learning rate
        total = torch.zeros(K, dtype=tdt)
        with torch.no_grad():
            m = {k: torch.zeros_like(v) for k, v in params.items()}
            sq = {k: torch.zeros_like(v) for k, v in params.items()}
            for s in range(steps):
                g, lv = vgrad(params, Xs[s], Ys[s])
                total += lv
                t = s + 1
                bc1 = 1 - b1 ** t
                bc2_sqrt = (1 - b2 ** t) ** 0.5
                for k, v in params.items():
                    m[k].lerp_(g[k], 1 - b1)
                    sq[k].mul_(b2).addcmul_(g[k], g[k], value=1 - b2)
                    denom = sq[k].sqrt().div_(bc2_sqrt).add_(eps)
                    v.sub_((lr_view(v) / bc1) * m[k] / denom)
        return total / steps, params

    def run(prepared=None):
        params = prepared if prepared is not None else fresh()
        return run_sgd(params) if optimizer == "sgd" else run_adam(params)

    def result(out):
        total, params = out
        nl = len(config.layers)
        finals = [[(params[f"{2 * i}.weight"][k].numpy().T, params[f"{2 * i}.bias"][k].numpy()) for i in range(nl)]
                  for k in range(K)]
        return total.numpy(), finals

    return run, fresh, result


def make_peer(peer, *args, optimizer="sgd"):
    if peer == "derive":
        return make_derive(*args, optimizer=optimizer)
    if peer == "derive-seq":
        return make_derive(*args, optimizer=optimizer, sequential=True)
    if peer == "jax-vmap":
        return make_jax(*args, optimizer=optimizer)
    if peer == "torch-vmap":
        return make_torch(*args, optimizer=optimizer)
    raise ValueError(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")


# --------------------------------------------------------------------------- check

def run_once(peer, config_name, dtype, K, steps, optimizer="sgd"):
    """(mean step loss per run, final loss per run) of one peer."""
    config, inits, lrs, X, Y = problem(config_name, dtype, K, steps, optimizer)
    run, _fresh, result = make_peer(peer, config, inits, lrs, X, Y, optimizer=optimizer)
    losses, finals = result(run())
    return np.asarray(losses, np.float64), np.array([_bce_np(config, f, X, Y) for f in finals])


def check(configs=SWEEP_CONFIGS, peers=PEERS, K=4, steps=5, rtol=1e-6,
          optimizers=SWEEP_OPTIMIZERS) -> list[str]:
    """Every peer's per-run mean step loss and final loss equal derive's train_many's (float64),
    for each optimizer. Returns lines to print; raises AssertionError on a mismatch."""
    lines = []
    for optimizer in optimizers:
        for name in configs:
            ref = run_once("derive", name, "float64", K, steps, optimizer)
            for peer in peers:
                if peer == "derive":
                    continue
                got = run_once(peer, name, "float64", K, steps, optimizer)
                for what, a, b in (("mean step loss", ref[0], got[0]), ("final loss", ref[1], got[1])):
                    if not np.allclose(b, a, rtol=rtol, atol=0):
                        raise AssertionError(f"{name} {optimizer}: {peer} {what} per run {b} != derive train_many "
                                             f"{a} (rtol {rtol})")
                err = float(np.max(np.abs(got[1] - ref[1]) / np.abs(ref[1])))
                lines.append(f"check {name} {optimizer} float64 K={K} steps={steps}: {peer} = derive train_many "
                             f"(max rel diff of final loss {err:.1e})")
    return lines


# --------------------------------------------------------------------------- timing

def worker(peer, config_name, dtype, Ks, steps, repeats, optimizer="sgd") -> dict:
    """Time one peer in this process: {K: [seconds per call, ...]}."""
    import gc

    out = {}
    for K in Ks:
        config, inits, lrs, X, Y = problem(config_name, dtype, K, steps, optimizer)
        run, fresh, _result = make_peer(peer, config, inits, lrs, X, Y, optimizer=optimizer)
        run()  # warm-up (and Numba compile / load from its cache)
        samples = []
        for _ in range(repeats):
            prepared = fresh()  # fresh parameters, copied outside the timed call
            gc.disable()
            t0 = time.perf_counter()
            run(prepared)
            samples.append(time.perf_counter() - t0)
            gc.enable()
        out[str(K)] = samples
    return out


def _spawn(peer, config_name, dtype, Ks, steps, repeats, optimizer="sgd", timeout=900) -> dict | str:
    cmd = [sys.executable, "-m", "benchmarks.sweep_bench", "--worker", peer, "--configs", config_name,
           "--dtypes", dtype, "--K", ",".join(map(str, Ks)), "--steps", str(steps), "--repeats", str(repeats),
           "--optimizers", optimizer]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out"
    if p.returncode != 0:
        return (p.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(p.stdout.strip().splitlines()[-1])


def available(peer) -> str | None:
    mods = {"derive": ["numba", "sympy"], "derive-seq": ["numba", "sympy"], "jax-vmap": ["jax", "optax"],
            "torch-vmap": ["torch"]}[peer]
    import importlib.util

    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def table(results, configs, dtypes, Ks, steps, peers, optimizers=("sgd",)) -> str:
    """Markdown table of ``results`` ({(peer, optimizer, config, dtype, K): [seconds, ...]}), one row
    per (optimizer, config, dtype, K): million run-steps per second of each peer and the ratios."""
    rows = ["| network | optimizer | dtype | K | " + " | ".join(peers) + " | derive / best peer | derive / JAX vmap |",
            "|---|---|---|---|" + "---|" * len(peers) + "---|---|"]
    for optimizer in optimizers:
        for name in configs:
            for dtype in dtypes:
                for K in Ks:
                    rate = {}
                    for peer in peers:
                        s = results.get((peer, optimizer, name, dtype, K))
                        rate[peer] = K * steps / statistics.median(s) if s else None
                    cells = [f"{rate[p] / 1e6:.3f}" if rate[p] else "–" for p in peers]
                    others = [v for p, v in rate.items() if p != "derive" and v]
                    best = max(others) if others else None
                    d = rate.get("derive")
                    ratio = f"{d / best:.2f}×" if d and best else "–"
                    vsj = f"{d / rate['jax-vmap']:.2f}×" if d and rate.get("jax-vmap") else "–"
                    cfg = CONFIGS[name]
                    rows.append(f"| {name} ({cfg.describe()}) | {optimizer} | {dtype} | {K} | " + " | ".join(cells)
                                + f" | {ratio} | {vsj} |")
    return "\n".join(rows)


def main(argv=None, prog="python -m benchmarks.sweep_bench") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(SWEEP_CONFIGS))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--K", default="64,512", help="numbers of runs per call (comma-separated)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--optimizers", default=",".join(SWEEP_OPTIMIZERS),
                    help="sgd and/or adam (comma-separated; Adam with benchmarks/configs.py's betas and eps)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per K in each subprocess")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of fresh subprocesses")
    ap.add_argument("--quick", action="store_true", help="K=16,64, 50 steps, 1 round of 3 repeats")
    ap.add_argument("--no-check", action="store_true", help="skip the float64 equality check")
    ap.add_argument("--out", help="also write the table (markdown) to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    def names(option, text, allowed):
        chosen = [x for x in text.split(",") if x]
        bad = [x for x in chosen if x not in allowed]
        if bad or not chosen:
            ap.error(f"unknown {option} {', '.join(bad) or '(none)'}; choose from {', '.join(allowed)}")
        return chosen

    configs = names("config(s)", a.configs, SWEEP_CONFIGS)
    dtypes = names("dtype(s)", a.dtypes, ("float32", "float64"))
    optimizers = names("optimizer(s)", a.optimizers, SWEEP_OPTIMIZERS)
    try:
        Ks = [int(k) for k in a.K.split(",") if k]
    except ValueError:
        Ks = []
    if not Ks or min(Ks) < 1:
        ap.error(f"--K takes numbers of runs >= 1, comma-separated, got {a.K!r}")
    for option in ("steps", "repeats", "rounds"):
        if getattr(a, option) < 1:
            ap.error(f"--{option} must be >= 1, got {getattr(a, option)}")
    if a.quick:
        Ks, a.steps, a.rounds, a.repeats = [16, 64], 50, 1, 3
    if a.worker:
        print(json.dumps(worker(a.worker, configs[0], dtypes[0], Ks, a.steps, a.repeats, optimizers[0])))
        return 0
    peers = []
    for p in names("peer(s)", a.peers, PEERS):
        why = available(p)
        if why:
            print(f"skip {p}: {why}")
        else:
            peers.append(p)
    if not a.no_check:
        cp = [p for p in peers]
        t0 = time.perf_counter()
        for line in check(configs, cp, optimizers=optimizers):
            print(line)
        print(f"check done in {time.perf_counter() - t0:.1f} s")
    results: dict = {}
    for rnd in range(a.rounds):
        for optimizer in optimizers:
            for name in configs:
                for dtype in dtypes:
                    order = peers if rnd % 2 == 0 else peers[::-1]
                    for peer in order:
                        t0 = time.perf_counter()
                        r = _spawn(peer, name, dtype, Ks, a.steps, a.repeats, optimizer)
                        what = f"round {rnd + 1} {optimizer} {name} {dtype} {peer}"
                        if isinstance(r, str):
                            print(f"{what}: FAILED {r}")
                            continue
                        for K, s in r.items():  # one median per round (a disturbed round counts once)
                            results.setdefault((peer, optimizer, name, dtype, int(K)), []).append(statistics.median(s))
                        meds = ", ".join(f"K={K}: {int(K) * a.steps / statistics.median(s) / 1e6:.3f} M"
                                         for K, s in r.items())
                        print(f"{what}: {meds} run-steps/s ({time.perf_counter() - t0:.1f} s)", flush=True)
    load = os.getloadavg()
    opt_names = " / ".join({"sgd": "SGD", "adam": "Adam"}[o] for o in optimizers)
    md = (f"Million run-steps per second (K runs × {a.steps} {opt_names} steps / seconds of one call), median of "
          f"the {a.rounds} rounds' medians of {a.repeats} calls each; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs.\n\n"
          + table(results, configs, dtypes, Ks, a.steps, peers, optimizers))
    print()
    print(md)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
