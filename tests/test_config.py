"""Config and SparseBackward: validation names the field, JSON round trip, versions."""

import json

import pytest

import randfx


def test_json_round_trip_keeps_every_field():
    config = randfx.Config("subspace", seed=2**64 - 1, dim=7, scope="global",
                           target_modules="c_attn", exclude_modules=["re:.*head"],
                           generator="squirrel5", dist="rademacher", init_std=0.02,
                           sparse_backward=randfx.SparseBackward(num_paths=3, epsilon=0.1))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["version"] == randfx.Config.VERSION
    assert data["target_modules"] == ["c_attn"]
    assert randfx.Config.from_dict(data) == config


@pytest.mark.parametrize("kwargs,field", [
    (dict(scheme="nope"), "scheme"),
    (dict(scheme="frozen", seed=-1), "seed"),
    (dict(scheme="frozen", seed=2**64), "seed"),
    (dict(scheme="frozen", seed=1.0), "seed"),
    (dict(scheme="random_base_lora", rank=0), "rank"),
    (dict(scheme="random_base_lora", lora_alpha=-1.0), "lora_alpha"),
    (dict(scheme="subspace"), "dim"),
    (dict(scheme="subspace", dim=0), "dim"),
    (dict(scheme="frozen", dim=4), "dim"),
    (dict(scheme="subspace", dim=4, scope="model"), "scope"),
    (dict(scheme="frozen", scope="global"), "scope"),
    (dict(scheme="frozen", target_modules=()), "target_modules"),
    (dict(scheme="frozen", target_modules=["re:("]), "target_modules"),
    (dict(scheme="frozen", exclude_modules=[""]), "exclude_modules"),
    (dict(scheme="frozen", generator="mt19937"), "generator"),
    (dict(scheme="frozen", dist="cauchy"), "dist"),
    (dict(scheme="frozen", init_std=0.0), "init_std"),
    (dict(scheme="frozen", init_std=float("nan")), "init_std"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        randfx.Config(**kwargs)


def test_fastfood_is_refused_as_not_implemented():
    with pytest.raises(ValueError, match="fastfood.*not implemented"):
        randfx.Config("fastfood", dim=8)


def test_sparse_backward_must_be_the_dataclass():
    with pytest.raises(TypeError, match="sparse_backward"):
        randfx.Config("frozen", sparse_backward=3)
    config = randfx.Config("frozen", sparse_backward={"num_paths": 2})
    assert config.sparse_backward == randfx.SparseBackward(num_paths=2)


@pytest.mark.parametrize("kwargs,field", [
    (dict(num_paths=0), "num_paths"),
    (dict(num_paths=True), "num_paths"),
    (dict(num_paths=2, temperature=0), "temperature"),
    (dict(num_paths=2, temperature=float("inf")), "temperature"),
    (dict(num_paths=2, epsilon=1.5), "epsilon"),
    (dict(num_paths=2, weighting="gradient"), "weighting"),
    (dict(num_paths=2, resample="never"), "resample"),
])
def test_bad_sparse_backward_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        randfx.SparseBackward(**kwargs)


def test_from_dict_refuses_unknown_fields_and_newer_versions():
    data = randfx.Config("frozen").to_dict()
    with pytest.raises(ValueError, match="unknown field.*'colour'"):
        randfx.Config.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="newer"):
        randfx.Config.from_dict({**data, "version": randfx.Config.VERSION + 1})
    with pytest.raises(TypeError):
        randfx.Config.from_dict("frozen")


def test_lora_scaling_is_alpha_over_rank():
    assert randfx.Config("random_base_lora", rank=8).lora_scaling == 1.0
    assert randfx.Config("random_base_lora", rank=8, lora_alpha=16).lora_scaling == 2.0
