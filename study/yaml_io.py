"""The one YAML reader and writer of the project: specs, ``best --out`` and ``--set KEY=VALUE``.

Safe loading only (``yaml.SafeLoader``: no tags, so no object construction), YAML 1.2 scalars (``1e-3`` is
a float and ``off``/``yes`` are strings, where YAML 1.1 reads a string and a boolean), duplicate keys refused.
Errors are ``SpecError``s naming the file and the line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from study import Issue, SpecError


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and reads YAML 1.2 scalars (``1e-3`` float, ``off`` string)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:
            continue  # unhashable key: SafeLoader reports it below
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 booleans: only true/false. YAML 1.1 would read the key ``off:`` (and on/yes/no) as a boolean.
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(text: str, file: str = "<spec>") -> Any:
    """Parse spec YAML: safe (no tags), YAML 1.2 scalars, duplicate keys refused; ``SpecError`` with the line."""
    try:
        loader = _Loader(text)  # a yaml.SafeLoader subclass: no tags, so no object construction
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<document>"
        problem = f"{e.context + '; ' if e.context else ''}{e.problem}"
        hint = "plain YAML (safe_load: no !!python tags), unique keys"
        raise SpecError(file, Issue(where, f"YAML error: {problem}", allowed=hint)) from None
    except yaml.YAMLError as e:
        raise SpecError(file, Issue("<document>", f"YAML error: {e}", allowed="plain YAML")) from None


def parse_scalar(text: str, where: str = "--set") -> Any:
    """One YAML value (``--set key=VALUE``) read exactly as the spec reader reads it: ``1e-3`` a float."""
    return read_yaml(text, where)


def dump_yaml(data: Any) -> str:
    """YAML text that ``read_yaml`` turns back into ``data`` (plain data only)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
