"""Early stopping for :func:`derive.runtime.fit.fit`: ``patience=N`` / ``derive train --patience N``.

After every epoch the validation loss is measured; an epoch whose loss is strictly below the
best so far is an improvement (Keras's ``EarlyStopping`` with ``min_delta=0``). When ``patience``
epochs in a row bring none, the run stops and its parameters *and optimizer state* go back to
those of the best epoch (Keras's ``restore_best_weights``, which restores the weights only). A
run that reaches its last epoch before its patience runs out keeps its final parameters, as
tf.keras 2 did (Keras 3 restores the best epoch's weights then too): so a patience larger than
the epochs changes nothing. Each restart has its own watch. The watch's record (best epoch and
loss, epochs waited, and the best epoch's parameters when they are not the saved ones) goes into
the checkpoint, so a resumed run goes on counting exactly as one run would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def copy_run(params: dict, state: dict) -> tuple[dict, dict]:
    """Deep copies of a run's parameters and optimizer state."""
    return ({k: v.copy() for k, v in params.items()},
            {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in state.items()})


@dataclass
class Watch:
    """One run's early-stopping state. Epochs are counted as ``state["epoch"]`` counts them
    (1 = after the first epoch; a resumed run goes on from its checkpoint's count)."""

    patience: int
    best_loss: float = math.inf
    best_epoch: int | None = None
    wait: int = 0
    stopped_epoch: int | None = None
    best_run: tuple[dict, dict] | None = field(default=None, repr=False)  # (params, state) at best_epoch

    def update(self, epoch: int, val_loss: float, params: dict, state: dict) -> bool:
        """Record epoch ``epoch``'s validation loss; True when the run must stop now."""
        if val_loss < self.best_loss:  # NaN is never an improvement
            self.best_loss, self.best_epoch, self.wait = float(val_loss), epoch, 0
            self.best_run = copy_run(params, state)
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def message(self) -> str:
        """What the summary says about a run that stopped early."""
        return (f"stopped early at epoch {self.stopped_epoch}: validation loss had not improved for "
                f"{self.wait} epochs since epoch {self.best_epoch} (best {self.best_loss:.6g}); "
                f"restored the parameters of epoch {self.best_epoch}")

    def record(self) -> dict:
        """The JSON part of the watch, for a checkpoint's meta (after a restore the run is at
        its best epoch again, with nothing waited)."""
        if self.stopped:
            return {"patience": self.patience, "best_epoch": self.best_epoch, "best_val_loss": self.best_loss,
                    "wait": 0, "stopped_epoch": self.stopped_epoch}
        return {"patience": self.patience, "best_epoch": self.best_epoch,
                "best_val_loss": None if self.best_epoch is None else self.best_loss, "wait": self.wait,
                "stopped_epoch": None}

    @classmethod
    def resume(cls, patience: int, record: dict | None, epoch: int, params: dict, state: dict,
               best: tuple[dict, dict] | None) -> Watch:
        """A watch that continues the checkpoint's ``record`` (its run is at epoch ``epoch`` with
        ``params``/``state``; ``best`` holds the best epoch's when that is an earlier one)."""
        watch = cls(patience)
        if not record or record.get("best_epoch") is None or record.get("best_val_loss") is None:
            return watch
        best_epoch = int(record["best_epoch"])
        if best_epoch == epoch:
            best = copy_run(params, state)
        elif best is None or int(best[1]["epoch"]) != best_epoch:
            return watch  # the best epoch's parameters are not in the file: start afresh
        watch.best_loss, watch.best_epoch = float(record["best_val_loss"]), best_epoch
        watch.wait, watch.best_run = int(record.get("wait", epoch - best_epoch)), best
        return watch
