"""The disk cache of nutpie's compiled models (bayespk.compile_cache): hits, misses, corrupt entries, off."""

import warnings
from pathlib import Path

import numpy as np
import pymc as pm
import pytest
from conftest import MODELS

import bayespk.compile_cache as cc
from bayespk.model import PopulationModel, Spec

X = np.linspace(0.0, 1.0, 8)
Y = 0.5 + 2.0 * X + np.array([0.1, -0.2, 0.05, 0.0, 0.15, -0.1, 0.2, -0.05])
DRAWS = dict(draws=40, tune=40, chains=2, seed=3, progress_bar=False)


def small_model(prior_sd=1.0, x=X):
    """A small regression with a shared variable (pm.Data), a transformed parameter and a deterministic."""
    with pm.Model(coords={"obs": np.arange(len(x))}) as m:
        xs = pm.Data("x", x, dims="obs")
        a = pm.Normal("a", 0.0, prior_sd)
        b = pm.Normal("b", 0.0, 5.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        mu = pm.Deterministic("mu", a + b * xs, dims="obs")
        pm.Normal("y", mu, sigma, observed=Y, dims="obs")
    return m


def compile_(model, cache_dir):
    return cc.compile_nutpie(model, jitter_rvs=set(), initial_points=None, cache_dir=cache_dir)


def draws(compiled):
    import nutpie

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = nutpie.sample(compiled, **DRAWS)
    return {v: tree.posterior[v].values for v in ("a", "b", "sigma", "mu")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder holding the small model, its entry, and the draws of the model compiled (a miss)."""
    folder = tmp_path_factory.mktemp("bayespk-cache")
    compiled = compile_(small_model(), folder)
    assert cc.last["status"] == "miss"
    return folder, Path(cc.last["path"]), draws(compiled)


def entries(folder):
    return sorted((folder / cc.SUBDIR).glob("*.nbp"))


def test_a_fresh_model_object_hits_the_disk_cache_and_samples_the_same_draws(cache):
    folder, entry, first = cache
    assert entry in entries(folder)
    hits = cc.stats["hit"]
    compiled = compile_(small_model(), folder)  # a new pm.Model: nothing shared in memory with the first
    assert cc.last["status"] == "hit" and cc.stats["hit"] == hits + 1
    assert compiled.compiled_logp_func.cache_hits == 1
    assert compiled.n_dim == 3 and compiled.shapes["mu"] == (len(X),)
    again = draws(compiled)
    for name, values in first.items():
        np.testing.assert_array_equal(again[name], values)
    # starting points are not cached: the ones asked for now are used
    start = cc.compile_nutpie(small_model(), jitter_rvs=set(), initial_points={"a": 3.0}, cache_dir=folder)
    assert cc.last["status"] == "hit"
    assert start.initial_point_func(0)[0] == 3.0 and compiled.initial_point_func(0)[0] == 0.0
    # the PyTensor functions are compiled on demand and are nutpie's
    assert len(compiled.logp_func.maker.fgraph.outputs) == 2


def test_cached_draws_equal_nutpies_own_compile(cache):
    import nutpie

    folder, _, first = cache
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = nutpie.compile_pymc_model(small_model(), jitter_rvs=set(), initial_points=None)
    compiled = compile_(small_model(), folder)
    assert cc.last["status"] == "hit"
    expected = draws(plain)
    for name, values in draws(compiled).items():
        np.testing.assert_array_equal(values, expected[name])
    # nutpie's with_data works on a cached model (the data are read through a pointer)
    moved = compiled.with_data(x=X + 1.0)
    assert draws(moved)["mu"].mean() > first["mu"].mean()


def test_a_changed_model_misses(cache):
    folder, _, _ = cache
    before = {p.name for p in entries(folder)}
    compile_(small_model(prior_sd=2.0), folder)  # another prior
    assert cc.last["status"] == "miss"
    compile_(small_model(x=np.linspace(0.0, 1.0, 9)), folder)  # shared data of another shape
    assert cc.last["status"] == "miss"
    assert len({p.name for p in entries(folder)} - before) == 2


def test_other_values_of_shared_data_hit_and_are_read(cache):
    """Shared data of the same shape (replicates, folds) use one entry, linked with the model's own values."""
    folder, _, first = cache
    compiled = compile_(small_model(x=X + 1.0), folder)
    assert cc.last["status"] == "hit"
    moved = draws(compiled)
    own = draws(nutpie_compile(small_model(x=X + 1.0)))
    for name, values in own.items():
        np.testing.assert_array_equal(moved[name], values)
    assert moved["mu"].mean() > first["mu"].mean()


def nutpie_compile(model):
    import nutpie

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nutpie.compile_pymc_model(model, jitter_rvs=set(), initial_points=None)


def test_the_key_follows_the_graph_of_a_bayespk_model():
    spec = Spec.from_toml(MODELS / "theophylline_1cmt_oral.toml")
    key, _ = cc._model_key(PopulationModel(spec).build())
    assert cc._model_key(PopulationModel(spec).build())[0] == key  # rebuilt: same key
    other = spec.to_dict()
    other["parameters"]["CL"]["typical"]["sigma"] = 0.5
    assert cc._model_key(PopulationModel(Spec.from_dict(other)).build())[0] != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_a_corrupt_entry_is_ignored_and_rebuilt(tmp_path, cache, damage):
    _, entry, first = cache
    (tmp_path / cc.SUBDIR).mkdir()
    path = tmp_path / cc.SUBDIR / entry.name
    good = entry.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a cache entry")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:  # one byte of the object code changed: the checksum catches it before numba loads anything
        path.write_bytes(good[:-100] + bytes([good[-100] ^ 0xFF]) + good[-99:])
    corrupt = cc.stats["corrupt"]
    compiled = compile_(small_model(), tmp_path)
    assert cc.last["status"] == "miss" and cc.stats["corrupt"] == corrupt + 1
    assert path.read_bytes()[: len(cc.MAGIC)] == cc.MAGIC  # rewritten whole
    assert not list((tmp_path / cc.SUBDIR).glob(".*"))  # no temporary file left
    if damage == "garbage":
        assert cc.clear(tmp_path) == 1 and not list((tmp_path / cc.SUBDIR).iterdir())
    if damage == "flipped":
        for name, values in draws(compiled).items():
            np.testing.assert_array_equal(values, first[name])
        compile_(small_model(), tmp_path)
        assert cc.last["status"] == "hit"


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESPK_CACHE_DIR", "off")
    assert cc.cache_dir_from_env() is None
    compile_(small_model(), None)
    assert cc.last["status"] == "disabled"
    assert cc._folder(False) is None and cc._folder("off") is None
    monkeypatch.setenv("BAYESPK_CACHE_DIR", str(tmp_path / "c"))
    assert cc.cache_dir_from_env() == tmp_path / "c"
    assert not (tmp_path / "c").exists()


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("BAYESPK_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cc.cache_dir_from_env() == tmp_path / "bayespk"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cc.cache_dir_from_env() == tmp_path / "home" / ".cache" / "bayespk"
