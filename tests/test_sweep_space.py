"""The search space of `derive sweep`: parsing, checks against the model (one clear line per
mistake, naming where), reproducible configurations and run seeds. No training here."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from derive.sweep.driver import run_seed
from derive.sweep.space import SweepError, build_space, load_space, parse_grid, parse_random


@pytest.fixture(scope="module")
def adam():
    return importlib.import_module("generated.xor_adam")


@pytest.fixture(scope="module")
def moons():
    return importlib.import_module("generated.moons")


def _error(space, module) -> str:
    with pytest.raises(SweepError) as info:
        space.check(module)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_grid_and_random_parse():
    g = parse_grid("lr=1e-3, 1e-2,0.1")
    assert (g.name, g.kind, g.values) == ("lr", "grid", (1e-3, 1e-2, 0.1))
    assert g.log
    assert not parse_grid("batch_size=10,20,30").log
    assert parse_grid("batch_size=8,16,32,64").log
    assert parse_grid("init=he_normal,xavier_uniform").values == ("he_normal", "xavier_uniform")
    r = parse_random("beta2=loguniform(0.9, 0.9999)")
    assert (r.kind, r.low, r.high, r.log) == ("loguniform", 0.9, 0.9999, True)
    assert parse_random("width1=int(4,32)").low == 4
    assert parse_random("init=choice(he_normal, xavier_normal)").values == ("he_normal", "xavier_normal")


@pytest.mark.parametrize("text, message", [
    ("lr=", "the grid of lr is empty"),
    ("lr=,", "the grid of lr is empty"),
    ("lr", "expected name=values"),
    ("lr=0.1,abc(", "is not a number"),
    ("lr=loguniform(1e-3,1)", "use --random"),
])
def test_bad_grids(text, message):
    with pytest.raises(SweepError, match=message) as info:
        parse_grid(text)
    assert f"--grid {text}" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("beta2=loguniform(0.9)", r"takes two numbers, got 1"),
    ("beta2=lognormal(0, 1)", "unknown distribution 'lognormal'; did you mean 'loguniform'"),
    ("beta2=loguniform(0, 1)", "needs 0 < a"),
    ("beta2=uniform(0.99, 0.9)", "needs a < b"),
    ("beta2=uniform(a, b)", "is not a number"),
    ("width1=int(2.5, 8)", "takes whole numbers"),
    ("beta2=0.9", "is not a distribution"),
    ("beta2=choice()", "at least one value"),
])
def test_malformed_distributions(text, message):
    with pytest.raises(SweepError, match=message) as info:
        parse_random(text)
    assert f"--random {text}" in str(info.value) and "\n" not in str(info.value)


def test_names_and_values_checked_against_the_model(adam, moons):
    assert "unknown hyperparameter 'lrr' for model 'xor_adam'; did you mean 'lr'" in _error(
        build_space(["lrr=0.1"]), adam)
    assert "unknown hidden width 'width3'" in _error(build_space(["width3=4,8"]), moons)
    assert "beta2 must lie in" in _error(build_space(["beta2=0.9,1.5"]), adam)
    assert "lr must lie in (0, inf), got -1" in _error(build_space(["lr=-1,0.1"]), adam)
    assert "beta1 must lie in" in _error(build_space(random=["beta1=uniform(0.5, 1.5)"]), adam)
    assert "unknown initialiser 'he'" in _error(build_space(["init=he,he_normal"]), adam)
    assert "batch_size must be a whole number >= 1, got 0.5" in _error(build_space(["batch_size=0.5,8"]), adam)
    assert "batch_size takes whole numbers" in _error(build_space(random=["batch_size=uniform(1,8)"]), adam)
    assert "init takes initialiser names" in _error(build_space(random=["init=uniform(1,8)"]), adam)
    assert "lr is swept twice" in _error(build_space(["lr=0.1"], ["lr=loguniform(1e-3,1)"]), adam)
    assert "lists 0.1 twice" in _error(build_space(["lr=0.1,0.1"]), adam)
    assert "both fixed and swept" in _error(build_space(["lr=0.1"], fixed={"lr": 0.2}), adam)
    assert "unknown hyperparameter 'momentum'" in _error(build_space(fixed={"momentum": 0.9}), adam)
    build_space(["lr=1e-3,1e-2", "batch_size=8,64", "init=he_normal,default", "width1=4,8"],
                ["beta2=loguniform(0.9,0.9999)", "epochs=int(1,3)"], {"beta1": 0.8}).check(adam)


def test_configurations_are_the_grid_times_the_draws_and_reproducible(adam):
    space = build_space(["lr=1e-3,1e-2", "batch_size=8,64"], ["beta2=loguniform(0.9,0.9999)", "width1=logint(2,64)"],
                        {"beta1": 0.8}).check(adam)
    a = space.configurations(5, seed=7)
    assert len(a) == 4 * 5
    assert a == space.configurations(5, seed=7)
    assert a != space.configurations(5, seed=8)
    draws = [(c["beta2"], c["width1"]) for c in a if c["lr"] == 1e-3 and c["batch_size"] == 8]
    assert draws == [(c["beta2"], c["width1"]) for c in a if c["lr"] == 1e-2 and c["batch_size"] == 64]
    assert all(0.9 <= b <= 0.9999 and 2 <= w <= 64 and isinstance(w, int) for b, w in draws)
    assert all(c["beta1"] == 0.8 for c in a)
    # a discrete draw that repeats an earlier one is dropped
    small = build_space(random=["width1=int(2,3)"]).check(adam).configurations(20, seed=0)
    assert sorted(c["width1"] for c in small) == [2, 3]


def test_run_seeds_depend_on_the_sweep_seed_replicate_and_fold_only():
    seeds = {(r, f): run_seed(3, r, f) for r in range(4) for f in range(3)}
    assert len(set(seeds.values())) == 12 and all(0 <= s < 2**32 for s in seeds.values())
    assert seeds == {(r, f): run_seed(3, r, f) for r in reversed(range(4)) for f in range(3)}
    assert run_seed(4, 0, 0) != seeds[0, 0]


def test_space_file(tmp_path, adam):
    path = tmp_path / "space.toml"
    path.write_text('[grid]\nlr = [0.001, 0.01]\ninit = ["he_normal", "xavier_uniform"]\n'
                    '[random]\nbeta2 = "loguniform(0.9, 0.9999)"\nwidth1 = { dist = "int", low = 2, high = 8 }\n'
                    'beta1 = [0.8, 0.9]\n[fixed]\neps = 1e-7\n[sweep]\ntrials = 3\nseeds = 2\n')
    space = load_space(path).check(adam)
    assert [d.name for d in space.grid] == ["lr", "init"]
    assert [(d.name, d.kind) for d in space.random] == [("beta2", "loguniform"), ("width1", "int"),
                                                       ("beta1", "choice")]
    assert space.fixed == {"eps": 1e-7} and space.options == {"trials": 3, "seeds": 2}
    for text, message in [("[grid]\nlr = []\n", "the grid of lr is empty"),
                          ("[grid]\nlr = [0.1\n", "not valid TOML"),
                          ("[random]\nbeta2 = 'loguniform(0.9)'\n", "takes two numbers"),
                          ("[sweep]\ntrails = 3\n", "unknown option 'trails'; did you mean 'trials'"),
                          ("[grids]\nlr = [0.1]\n", "unknown table [grids]")]:
        path.write_text(text)
        with pytest.raises(SweepError, match=message.replace("[", r"\[").replace("(", r"\(")) as info:
            load_space(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    path.write_text("[grid]\nlrr = [0.1]\n")
    assert f"{path} [grid] lrr: unknown hyperparameter 'lrr'" in _error(load_space(path), adam)
    with pytest.raises(SweepError, match="space file not found"):
        load_space(tmp_path / "missing.toml")


def test_optuna_distributions(adam):
    od = pytest.importorskip("optuna.distributions")
    space = build_space(["lr=1e-3,1e-2"], ["beta2=loguniform(0.9,0.9999)", "width1=logint(2,64)",
                                           "init=choice(he_normal,default)"]).check(adam)
    d = space.optuna_distributions()
    assert d["lr"] == od.CategoricalDistribution([1e-3, 1e-2])
    assert d["beta2"] == od.FloatDistribution(0.9, 0.9999, log=True)
    assert d["width1"] == od.IntDistribution(2, 64, log=True)
    assert d["init"] == od.CategoricalDistribution(["he_normal", "default"])
    assert np.isclose(d["beta2"].low, 0.9)
