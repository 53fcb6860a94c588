"""``--set KEY=VALUE``: the one parser of command-line overrides (``run --set`` on a spec, ``gmm --set`` on a
stage config).

``split_override`` reads one item: the key is a dotted path, the value one YAML 1.2 value read by
``study.yaml_io.parse_scalar`` exactly as the spec reader reads it (``1e-3`` a float, ``[10, 100]`` a list,
``off`` a string). ``apply_spec_overrides`` writes items into a spec's parsed YAML document *before* it is
validated, so an override is checked by the same code and reported with the same messages as the key
written in the file; the study's spec.yaml then holds the overridden values (resume and the hash check
see them).

Spec keys may themselves contain dots (``space: {guidance.width: ...}``): a path is matched against the
keys present, longest first (``space.guidance.width.low`` -> ``space`` / ``guidance.width`` / ``low``). A
key not present yet is one path part, except directly under a ``space`` mapping, where a new parameter's
key is two parts (``space.guidance.lr={kind: float, low: 1e-4, high: 1e-2}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from study import Issue, SpecError
from study.yaml_io import parse_scalar

EXAMPLE = "budget.trials_per_n=4"


def split_override(item: str, example: str = EXAMPLE) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> (key, YAML value). ValueError names the item when there is no ``=`` or no key;
    a value that is not YAML raises the reader's ``SpecError`` (a ValueError) naming ``--set <item>``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. {example}")
    return key.strip(), parse_scalar(raw, f"--set {item}")


def _split_path(node: dict[str, Any], parts: list[str], in_space: bool) -> tuple[str, list[str]]:
    """The first key of ``parts`` in ``node``: the longest dotted prefix present, else one part (two under
    ``space``, a parameter path)."""
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in node:
            return ".".join(parts[:k]), parts[k:]
    k = 2 if in_space and len(parts) >= 2 else 1
    return ".".join(parts[:k]), parts[k:]


def apply_spec_overrides(data: Any, items: Sequence[str], file: str) -> Any:
    """The spec document ``data`` (parsed YAML, not yet validated) with each ``KEY=VALUE`` of ``items`` set,
    in order (a later item wins). Missing mappings on the way are created; a path through a value that is
    not a mapping is a ``SpecError`` naming the item. ``data`` itself is not modified."""
    import copy

    if not items or not isinstance(data, dict):
        return data  # no overrides, or not a mapping (parse_spec reports that)
    out = copy.deepcopy(data)
    for item in items:
        try:
            key, value = split_override(item)
        except SpecError:
            raise
        except ValueError as e:
            raise SpecError(file, Issue("", str(e))) from None
        node, parts, where = out, key.split("."), []
        while True:
            head, parts = _split_path(node, parts, in_space=where[-1:] == ["space"])
            where.append(head)
            if not parts:
                node[head] = value
                break
            child = node.setdefault(head, {})
            if child is None:
                child = node[head] = {}
            if not isinstance(child, dict):
                raise SpecError(file, Issue(".".join(where), f"--set {item}: not a mapping, cannot set "
                                            f"{'.'.join(parts)!r} inside it", child, "a key path to a value"))
            node = child
    return out


def overrides_label(file: str, items: Sequence[str]) -> str:
    """The spec's name in messages: the file, and the overrides applied to it (``gmm.yaml + --set a=1``)."""
    return file + "".join(f" + --set {i}" for i in items)


__all__ = ["EXAMPLE", "apply_spec_overrides", "overrides_label", "split_override"]
