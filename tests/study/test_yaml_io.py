"""The bounded YAML reader (study.yaml_io): merge keys, and documents just inside / outside the bounds."""

from __future__ import annotations

import pytest

from study import SpecError
from study.yaml_io import MAX_DEPTH, MAX_NODES, parse_scalar, read_yaml


def test_merge_key_merges_and_explicit_keys_override():
    data = read_yaml("base: &b {width: 16, depth: 2}\nguidance: {<<: *b, width: 32}\n")
    # the merged key `depth` arrives; `width` given explicitly wins over the merged one (YAML merge spec)
    assert data["guidance"] == {"width": 32, "depth": 2}
    with pytest.raises(SpecError, match="duplicate key 'width'"):  # a key written twice is still refused
        read_yaml("guidance: {width: 1, width: 2}\n")


def test_nesting_depth_bound_is_exact():
    assert parse_scalar("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None  # at the bound: read
    with pytest.raises(SpecError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        parse_scalar("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_alias_expansion_counts_every_use():
    # 300 uses of a 400-element list: 120k nodes once expanded, though the text is small
    text = "a: &a [" + ", ".join(["1"] * 400) + "]\nb: [" + ", ".join(["*a"] * 300) + "]\n"
    with pytest.raises(SpecError, match=f"more than {MAX_NODES} nodes"):
        read_yaml(text)
    few = "a: &a [1, 2]\nb: [*a, *a]\n"  # ordinary reuse stays allowed
    assert read_yaml(few)["b"] == [[1, 2], [1, 2]]
