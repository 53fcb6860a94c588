"""The one YAML reader and writer of the project: specs, ``best --out`` and ``--set KEY=VALUE``.

Safe loading only (``yaml.SafeLoader``: no tags, so no object construction), YAML 1.2 scalars (``1e-3`` is
a float and ``off``/``yes`` are strings, where YAML 1.1 reads a string and a boolean), duplicate keys refused,
merge keys (``<<: *defaults``) supported (their keys may be overridden, as the YAML merge spec says).
Errors are ``SpecError``s naming the file and the line.

Bounded, because a spec may come from anyone (issue 16): a spec file must be a regular file (a FIFO would
block, ``/dev/zero`` never ends) of at most ``MAX_BYTES``; nesting deeper than ``MAX_DEPTH`` is refused while
composing (before Python's recursion limit), and so is a document whose aliases expand to more than
``MAX_NODES`` nodes (a 1.2 KB "billion laughs" expands to 10^9 nodes when validated or printed).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from study import Issue, SpecError

MAX_BYTES = 1_000_000  # largest spec file read (the biggest real spec is a few KB)
MAX_DEPTH = 64  # deepest nesting of lists/mappings (real specs nest 5 deep)
MAX_NODES = 100_000  # most nodes the document may expand to, aliases counted at every use


class _Bound(yaml.composer.ComposerError):
    """A document over one of the bounds; ``allowed`` says which."""

    def __init__(self, problem: str, allowed: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)
        self.allowed = allowed


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and reads YAML 1.2 scalars (``1e-3`` float, ``off`` string),
    with bounded nesting depth and alias expansion."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # PyYAML composes recursively: bound the depth here, long before a RecursionError
        if self._depth >= MAX_DEPTH:
            raise _Bound(f"nesting deeper than {MAX_DEPTH} levels", f"at most {MAX_DEPTH} nested lists/mappings",
                         self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES nodes, or refer to themselves.

    An alias is the same node object as its anchor, so sizes are memoised per node: linear in the
    document, however large the expansion would be.
    """
    size: dict[int, int] = {}
    open_: set[int] = set()

    def expanded(node: yaml.Node) -> int:
        key = id(node)
        if key in size:
            return size[key]
        if key in open_:
            raise _Bound("an alias refers to a node that contains it (recursive alias)",
                         "aliases to complete nodes only", node.start_mark)
        open_.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(expanded(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(expanded(k) + expanded(v) for k, v in node.value)
        open_.discard(key)
        if n > MAX_NODES:
            raise _Bound(f"aliases expand the document to more than {MAX_NODES} nodes (an alias bomb?)",
                         f"at most {MAX_NODES} nodes with every alias expanded", node.start_mark)
        size[key] = n
        return n

    if root is not None:
        expanded(root)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # ``<<:``: merged keys may be overridden; construct_mapping merges them
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
    """Parse spec YAML: safe (no tags), YAML 1.2 scalars, duplicate keys refused; ``SpecError`` with the line.
    Bounded: at most MAX_BYTES of text, MAX_DEPTH levels of nesting, MAX_NODES nodes after alias expansion."""
    if len(text) > MAX_BYTES:
        raise SpecError(file, Issue("<document>", f"too large: {len(text)} characters", allowed=f"at most {MAX_BYTES}"))
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
        hint = getattr(e, "allowed", "plain YAML (safe_load: no !!python tags), unique keys")
        raise SpecError(file, Issue(where, f"YAML error: {problem}", allowed=hint)) from None
    except yaml.YAMLError as e:
        raise SpecError(file, Issue("<document>", f"YAML error: {e}", allowed="plain YAML")) from None


def read_text_file(path: str | Path, what: str = "spec file", fmt: str = "YAML") -> str:
    """The UTF-8 text of a spec file (or another input file, ``what``, in format ``fmt``): a regular file of at
    most MAX_BYTES, else a ``SpecError`` naming it.

    Opened non-blocking and checked on the open descriptor: a FIFO neither blocks nor is read, a device such as
    /dev/zero is refused before the first byte, and a file cannot be swapped between the check and the read.
    """
    file = str(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise SpecError(file, Issue("", f"cannot read the {what} ({e.strerror or e})")) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise SpecError(file, Issue("", f"cannot read the {what} (Is a directory)"))
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a plain file"
        raise SpecError(file, Issue("", f"cannot read the {what} (not a regular file: {kind})",
                                    allowed=f"a regular {fmt} file"))
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SpecError(file, Issue("", f"{what} too large: more than {MAX_BYTES} bytes",
                                    allowed=f"at most {MAX_BYTES} bytes"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(file, Issue("", f"not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})",
                                    allowed=f"a UTF-8 {fmt} file")) from None


def parse_scalar(text: str, where: str = "--set") -> Any:
    """One YAML value (``--set key=VALUE``) read exactly as the spec reader reads it: ``1e-3`` a float."""
    return read_yaml(text, where)


def dump_yaml(data: Any) -> str:
    """YAML text that ``read_yaml`` turns back into ``data`` (plain data only)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
