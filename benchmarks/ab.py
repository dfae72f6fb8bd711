"""Interleaved A/B of derive's `train` against an older build of the same benchmark modules.

A change to the kernels or the runtime is judged by timing old and new in one process, calls
alternating, so that both see the same machine state (two separate `derive bench` runs on these
shared machines differ by more than most changes do). The old modules come from a worktree of
the commit before::

    git worktree add /tmp/old HEAD~1
    (cd /tmp/old && python -c "from benchmarks.configs import CONFIGS; \\
        from benchmarks.peers._derive_common import module_for; \\
        [module_for(dict(CONFIGS)[c], o) for c in ('tiny', 'small') for o in ('sgd', 'adam')]")
    python -m benchmarks.ab --old /tmp/old/benchmarks/_generated --configs tiny,small [--many 64]

Prints, per configuration, optimizer and dtype, the median µs per step of each (``train`` over
``--steps`` batches per call, ``--calls`` calls each) and new/old; with ``--many K``, run-steps
per second of ``train_many`` over K runs with K learning rates instead.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.configs import CONFIGS, init_params
from benchmarks.peers._derive_common import module_for, params_from
from benchmarks.sweep_bench import batch_rows


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=Path, help="an older build's benchmarks/_generated folder")
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--optimizers", default="sgd,adam")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--steps", type=int, default=200, help="batches per train() call")
    parser.add_argument("--calls", type=int, default=31, help="timed calls of each, alternating")
    parser.add_argument("--many", type=int, default=0, metavar="K", help="time train_many over K runs instead")
    args = parser.parse_args(argv)
    configs = dict(CONFIGS)
    for cname in args.configs.split(","):
        config = configs[cname]
        for opt in args.optimizers.split(","):
            old_path = args.old / f"bench_{cname}_{opt}.py"
            if not old_path.exists():
                parser.error(f"{old_path} does not exist: build the old modules first (see --help)")
            old = _load(old_path, f"_ab_old_{cname}_{opt}")
            new = module_for(config, opt)
            for dtype in args.dtypes.split(","):
                X, Y = batch_rows(config, dtype, args.steps)
                K = args.many
                lrs = list(np.geomspace(1e-3, 1e-1, K)) if K else None
                runs = {}
                for tag, m in (("old", old), ("new", new)):
                    if K:
                        ps = [params_from(m, init_params(config, dtype, k)) for k in range(K)]
                        call = functools.partial(m.train_many, ps, [m.init_state(p) for p in ps], X, Y, epochs=1,
                                                 batch_size=config.batch, shuffle=False, lr=lrs)
                    else:
                        p = params_from(m, init_params(config, dtype, 0))
                        call = functools.partial(m.train, p, m.init_state(p), X, Y, epochs=1,
                                                 batch_size=config.batch, shuffle=False)
                    call()  # compile or load
                    runs[tag] = (call, [])
                gc.disable()
                try:
                    for i in range(args.calls):
                        for tag in (("old", "new") if i % 2 else ("new", "old")):
                            call, out = runs[tag]
                            t = time.perf_counter()
                            call()
                            out.append(time.perf_counter() - t)
                finally:
                    gc.enable()
                o, n = (statistics.median(runs[tag][1]) for tag in ("old", "new"))
                if K:
                    rate = K * args.steps
                    print(f"{cname} {opt} {dtype} K={K}: old {rate / o / 1e6:.2f} M run-steps/s, "
                          f"new {rate / n / 1e6:.2f}, new/old {o / n:.3f}", flush=True)
                else:
                    print(f"{cname} {opt} {dtype}: old {o / args.steps * 1e6:.3f} µs/step, "
                          f"new {n / args.steps * 1e6:.3f}, new/old {n / o:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
