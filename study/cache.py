"""The stage cache: artefacts that do not depend on searched knobs, computed once and reused.

What is cached, and its key (``tgdp.config.config_hash`` of everything the artefact depends on):

    source-<key>.pt       stage A, the source model       key: data config without n, source config
    classifier-<key>.pt   stage B, when no ``classifier.*`` is searched
                                                          key: data config, classifier config
    baseline-<key>.pt     each *shared* method an experiment offers (``tgdp.methods``: ``Method.shared``)
                          (model state if trained, validation and test metrics, samples)
                                                          key: method, data config, sample config, the
                                                          source key if it uses the source model, its
                                                          ``Method.sections``, its revision if bumped
                                                          (+ the experiment's evaluation config, if any)

The source draw of ``GMMTask.draw`` does not depend on n (the source samples are drawn first), so one
source model serves every n. Entries are written atomically (tmp file + ``os.replace``) and read with
``torch.load(weights_only=True)``: plain tensors and containers only, never pickled code. The cache
directory is ``<study>/cache`` unless ``TGDP_STUDY_CACHE_DIR`` names a shared one (later studies with
the same configs then reuse the artefacts).

A corrupt entry (truncated, bit-flipped, not a weights-only torch file) is detected when it is checked
(``has``: the zip CRCs of the ``torch.save`` file) or loaded (``get``: ``torch.load`` fails): it is
moved aside to ``<entry>.corrupt``, a warning is logged (and appended to ``<cache>/corrupt.log``) and
the entry counts as missing, so the stage is recomputed.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from study.safe_io import UnsafePathError, append_text
from tgdp.config import TGDPConfig, config_hash, to_dict
from tgdp.methods import get_method

CACHE_ENV = "TGDP_STUDY_CACHE_DIR"  # environment variable naming a shared cache directory
CACHE_VERSION = 2  # bump when the layout of an entry changes (old entries are then ignored); 2: classifier state keys
log = logging.getLogger("study.cache")


def _data_without_n(data_cfg: Any) -> dict[str, Any]:
    d = to_dict(data_cfg) if not isinstance(data_cfg, dict) else dict(data_cfg)
    d.pop("n", None)
    return d


def source_key(data_cfg: Any, cfg: TGDPConfig) -> str:
    """Key of the source model: the source draw (data config minus n) and ``cfg.source``."""
    return config_hash("source", CACHE_VERSION, _data_without_n(data_cfg), cfg.source)


def classifier_key(data_cfg: Any, cfg: TGDPConfig) -> str:
    """Key of a stage-B domain classifier: the whole data draw and ``cfg.classifier``."""
    return config_hash("classifier", CACHE_VERSION, data_cfg, cfg.classifier)


def baseline_key(method: str, data_cfg: Any, cfg: TGDPConfig, evaluation: Any = None) -> str:
    """Key of a shared method's entry: the method, the data, the sampler and only what the method reads
    (``tgdp.methods``: the source key when ``uses_source``, its ``sections``, its ``revision`` when bumped),
    plus ``evaluation``, the experiment's evaluation config, when it has one (ECG's utility classifier).

    The part order is fixed: keys written before the registry existed stay valid. A method that is not
    shared (tgdp, tgdp_reg: trained in every trial) or unknown is a ValueError."""
    m = get_method(method)
    if not m.shared:
        raise ValueError(f"{method!r} is not a shared method (it is trained in every trial): it has no cache entry")
    parts: list[Any] = [data_cfg, cfg.sample]
    if m.uses_source:
        parts.append(source_key(data_cfg, cfg))
    parts += [getattr(cfg, section) for section in m.sections]
    if m.revision:
        parts.append({"revision": m.revision})
    if evaluation is not None:
        parts.append(evaluation)
    return config_hash("baseline", CACHE_VERSION, method, *parts)


def classifier_searched(space: Any) -> bool:
    """True when the search space touches the domain classifier (then every trial trains its own)."""
    return any(path.split(".", 1)[0] == "classifier" for path in space)


def resolve_cache_dir(study_cache: Path) -> Path:
    """The cache directory: ``$TGDP_STUDY_CACHE_DIR`` (absolute) if set, else the study's own."""
    shared = os.environ.get(CACHE_ENV)
    return Path(shared).expanduser().resolve() if shared else Path(study_cache).resolve()


class StageCache:
    """A directory of ``<kind>-<key>.pt`` files, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}.pt"

    def has(self, kind: str, key: str) -> bool:
        """True when the entry exists and its file is intact (a corrupt one is moved aside: False)."""
        p = self.path(kind, key)
        if not p.is_file():
            return False
        problem = torch_file_problem(p)
        if problem is None:
            return True
        self._quarantine(p, problem)
        return False

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry, or None when absent or corrupt (a half-written entry never exists: see ``put``)."""
        p = self.path(kind, key)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated, corrupt or not weights-only: recompute the stage
            self._quarantine(p, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return None

    def _quarantine(self, p: Path, problem: str) -> None:
        """Move a corrupt entry aside (``<entry>.corrupt``) and log it; it then counts as missing."""
        msg = f"stage cache: corrupt entry {p} ({problem[:300]}); moved to {p.name}.corrupt, the stage is recomputed"
        log.warning(msg)
        try:
            os.replace(p, p.with_name(p.name + ".corrupt"))
        except FileNotFoundError:
            pass  # another process moved it first
        try:
            append_text(self.root / "corrupt.log", f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} {msg}\n")
        except (OSError, UnsafePathError):  # the log is best effort; never written through a symlink
            pass

    def put(self, kind: str, key: str, entry: dict[str, Any]) -> Path:
        """Write ``entry`` to a temporary file in the same directory, then rename it into place."""
        target = self.path(kind, key)
        atomic_save(entry, target)
        return target


def torch_file_problem(p: Path) -> str | None:
    """Why the ``torch.save`` file ``p`` is damaged (truncated, a bad zip CRC), or None when it is intact."""
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
        return f"bad CRC in {bad}" if bad is not None else None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def atomic_save(obj: Any, target: Path) -> None:
    """``torch.save`` to ``target`` atomically (used for trial results too)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
