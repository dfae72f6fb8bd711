"""``derive sweep``: many runs of one model — a search space, seeds, cross-validation folds — on
every core of this machine or on a Dask cluster, with results that do not depend on where or in
which order the runs ran. See docs/sweeps.md.

* :mod:`.space` — the search space (grid, random distributions, a TOML file), checked against the model;
* :mod:`.driver` — :func:`sweep`: folds, the plan, seeds, chunking, resume, Optuna's TPE;
* :mod:`.worker` — one chunk of runs in one ``train_many`` call (what every engine runs);
* :mod:`.engine` — the local engine (this process, every core) and the Dask engine;
* :mod:`.results` — the journal, the table (Parquet or CSV), the curves, the summary;
* :mod:`.plots` — loss against each hyperparameter, a heatmap of two, the best runs' curves;
* :mod:`.progress` — the progress bar over runs.

>>> df = sweep("xor", data="xor", grid=["lr=0.03,0.1,0.3"], seeds=3, epochs=50)   # doctest: +SKIP
"""

from .driver import best_config, make_folds, run_seed, sweep
from .results import read_table
from .space import Space, SweepError, build_space, load_space

__all__ = ["sweep", "best_config", "make_folds", "run_seed", "read_table", "Space", "SweepError", "build_space",
           "load_space"]
