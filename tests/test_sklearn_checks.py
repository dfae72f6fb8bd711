"""scikit-learn's estimator checks on DeriveClassifier and DeriveRegressor: every check passes,
or is listed by derive.sklearn.expected_failed_checks with its reason (and then really fails)."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import (  # noqa: E402
    check_methods_sample_order_invariance,
    estimator_checks_generator,
    parametrize_with_checks,
)

from derive.sklearn import DeriveClassifier, DeriveRegressor, expected_failed_checks  # noqa: E402


@parametrize_with_checks([DeriveClassifier(), DeriveRegressor()], expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _names(estimator) -> set[str]:
    return {getattr(check, "func", check).__name__ for _, check in estimator_checks_generator(estimator)}


def test_expected_failures_are_real_checks_with_reasons():
    assert expected_failed_checks(DeriveClassifier()) == {} and expected_failed_checks(DeriveRegressor()) == {}
    for est in (DeriveClassifier(dtype="float32"), DeriveRegressor(dtype="float32")):
        listed = expected_failed_checks(est)
        assert set(listed) == {"check_methods_sample_order_invariance", "check_methods_subset_invariance"}
        assert set(listed) <= _names(est)
        assert all("float32" in reason and "1e-7" in reason for reason in listed.values())


def test_float32_rows_move_in_the_last_bits_with_their_position():
    """The reason given for float32 is what happens: the check fails in float32 and passes in
    float64 on the same data."""
    check_methods_sample_order_invariance("DeriveRegressor", DeriveRegressor(max_iter=20))
    with pytest.raises(AssertionError, match="not invariant"):
        check_methods_sample_order_invariance("DeriveRegressor", DeriveRegressor(max_iter=20, dtype="float32"))
