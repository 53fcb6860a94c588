"""tgdp/config.py: dict round-trip, key-path errors, content hash."""

from __future__ import annotations

import dataclasses

import pytest

from tgdp.config import (ClassifierConfig, GMMConfig, GuidanceConfig, SampleConfig, ScoreConfig, TGDPConfig,
                         TimeClassifierConfig, config_hash, from_dict, to_dict)

ALL = [GMMConfig, ScoreConfig, ClassifierConfig, TimeClassifierConfig, GuidanceConfig, SampleConfig, TGDPConfig]


@pytest.mark.parametrize("cls", ALL)
def test_round_trip_defaults(cls):
    cfg = cls()
    # guards to_dict -> from_dict equality for every config (tuples come back as tuples, nesting rebuilt)
    assert from_dict(cls, to_dict(cfg)) == cfg


def test_round_trip_non_defaults_nested():
    cfg = TGDPConfig(guidance=GuidanceConfig(width=64, eta_cycle=0.5, loss="mse", conditional=True),
                     vanilla=ScoreConfig(steps=7, lr=3e-4), sample=SampleConfig(solver="ddpm", steps=100))
    back = from_dict(TGDPConfig, to_dict(cfg))
    # guards nested non-default values surviving the round trip
    assert back == cfg and isinstance(back.guidance, GuidanceConfig)
    gmm = GMMConfig(mu_source=(1.0, 2.0), n=10)
    # guards tuple fields: JSON lists come back as tuples (frozen dataclass equality)
    assert from_dict(GMMConfig, to_dict(gmm)) == gmm and isinstance(from_dict(GMMConfig, to_dict(gmm)).mu_source, tuple)
    # guards partial dicts: missing keys take their defaults
    assert from_dict(TGDPConfig, {"guidance": {"width": 8}}) == TGDPConfig(guidance=GuidanceConfig(width=8))


def test_unknown_key_names_the_key_path():
    # guards typo detection at the top level
    with pytest.raises(ValueError, match="widht"):
        from_dict(GuidanceConfig, {"widht": 3})
    # guards the nested key path in the message
    with pytest.raises(ValueError, match=r"guidance.*eta_cylce|eta_cylce.*guidance"):
        from_dict(TGDPConfig, {"guidance": {"eta_cylce": 1.0}})


@pytest.mark.parametrize("data, path", [
    ({"guidance": {"width": "512"}}, "guidance.width"),  # string for int
    ({"guidance": {"width": 1.5}}, "guidance.width"),  # float for int
    ({"source": {"steps": True}}, "source.steps"),  # bool is not an int
    ({"sample": {"guidance_scale": "1"}}, "sample.guidance_scale"),  # string for float
    ({"classifier": {"conditional": 1}}, "classifier.conditional"),  # int for bool
    ({"guidance": {"loss": 3}}, "guidance.loss"),  # int for str
    ({"guidance": 5}, "guidance"),  # scalar for a nested config
])
def test_wrong_type_names_the_key_path(data, path):
    # guards specific errors at the boundary, naming the offending key path
    with pytest.raises(ValueError, match=path.replace(".", r"\.")):
        from_dict(TGDPConfig, data)


def test_wrong_type_inside_a_tuple_names_the_key_path():
    # BUG (tgdp/config.py, _coerce, tuple branch `tuple(float(v) for v in value)`): an element that is
    # not a number either raises float()'s bare "could not convert string to float" (no key path) or,
    # for "0.5" / True, is silently coerced. Fix: check each element like the float branch does and raise
    # ValueError(f"{where}[{i}]: expected a number, got {v!r}").
    # guards the key path for tuple elements
    with pytest.raises(ValueError, match="mu_source"):
        from_dict(GMMConfig, {"mu_source": ["a", 0.5]})
    # guards that strings are not silently coerced to numbers inside tuples
    with pytest.raises(ValueError, match="mu_source"):
        from_dict(GMMConfig, {"mu_source": ["0.5", 0.5]})


def test_int_accepted_for_float_fields():
    # guards YAML ergonomics: lr: 1 is a valid float and stored as float
    cfg = from_dict(GuidanceConfig, {"lr": 1})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_config_hash_is_stable_and_sensitive():
    a, b = TGDPConfig(), TGDPConfig()
    # guards stability: equal configs hash equally (cache keys and run names)
    assert config_hash(a) == config_hash(b) == config_hash(from_dict(TGDPConfig, to_dict(a)))
    # guards the short fixed-length form (16 hex chars) used in run names
    assert config_hash({"x": 1}) == config_hash({"x": 1}) and len(config_hash(a)) == 16
    # guards sensitivity to any nested field
    assert config_hash(a) != config_hash(dataclasses.replace(a, guidance=GuidanceConfig(eta_cycle=0.1)))
    # guards sensitivity to the extra parts (e.g. a data hash next to the config)
    assert config_hash(a, "data1") != config_hash(a, "data2")
    # guards the order of parts mattering (stage config vs upstream hash are not interchangeable)
    assert config_hash(ScoreConfig(), GMMConfig()) != config_hash(GMMConfig(), ScoreConfig())


@pytest.mark.parametrize("data, message", [
    ({"guidance": {"epochs": -1}}, "guidance.epochs: must be > 0; got -1"),  # the case a spec used to slip through
    ({"classifier": {"holdout_fraction": 1.5}}, "classifier.holdout_fraction: must be in [0, 1)"),
    ({"source": {"ema": 1.0}}, "source.ema: must be in [0, 1)"),  # ema = 1 would never move the weights
    ({"guidance": {"loss": "l1"}}, "guidance.loss: got 'l1'; allowed: ['kl', 'mse']"),
    ({"sample": {"solver": "euler"}}, "sample.solver: got 'euler'; allowed: ['dpm2', 'ddpm']"),
    ({"guidance": {"eta_cycle": -0.5}}, "guidance.eta_cycle: must be >= 0"),
])
def test_out_of_range_values_raise_naming_the_key_path(data, message):
    # guards range validation at the boundary: the message names the full key path, value and allowed range
    with pytest.raises(ValueError) as err:
        from_dict(TGDPConfig, data)
    assert message in str(err.value)

