"""On held-out data DeriveClassifier scores within 1 point of MLPClassifier with matching
settings (benchmarks/sklearn_compare.py: the same splits, network, Adam, batch, epochs, L2 and
initialisation scheme), averaged over 10 seeds."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from benchmarks.sklearn_compare import compare  # noqa: E402


@pytest.mark.parametrize("name", ["iris", "breast_cancer"])
def test_held_out_accuracy_within_one_point_of_mlpclassifier(name):
    row = compare(name, seeds=range(10), settings={"max_iter": 100}, peers=("derive", "sklearn"))
    assert len(row.scores["derive"]) == len(row.scores["sklearn"]) == 10
    assert row.mean("derive") > 0.9 and row.mean("sklearn") > 0.9  # both learned the task
    assert abs(row.diff()) <= 1.0, (row.scores["derive"], row.scores["sklearn"])
