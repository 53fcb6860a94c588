"""Preprocessed ECG datasets loaded once per study: a memory-mapped cache in front of the loaders.

Why: ``load_ptbxl`` / ``load_cpsc`` read and reshape every WFDB record (28 s of CPU and 1.7 GB peak for
full-size PTB-XL plus ICBEB2018: bench/ecg_data_load.py), in every trial and Train worker. ``load_cached(kind,
root, cache_dir, **options)`` returns exactly the loader's ``ECGDataset`` for ``(root, **options)``, built once
in parallel and then mapped from disk: the page cache holds one copy per node, shared by every process.

Entry. ``<cache_dir>/ecg-data/<kind>-<key>/`` holds one ``.npy`` per array (x, y, lengths, and y_full and
folds when the loader returns them) and ``index.json`` (record ids, skipped records, label names, source,
meta, and per array its shape, dtype, byte size and CRC-32). The key is a SHA-256 of:

* the file list under ``root``: each file's relative name, size and mtime (ns): any file change invalidates;
* the loader and its options (``min_length``, ``skip_bad``, ``limit``, ...), with the loader's defaults
  filled in, so ``{}`` and ``{"min_length": 500}`` share an entry;
* the code version: the source text of the loader modules and of this one, plus numpy/scipy versions.

Reading. Arrays are opened with ``np.load(mmap_mode="c", allow_pickle=False)``: nothing is unpickled;
"c" (copy-on-write) shares the file's pages like "r" but turns an accidental in-place write into a
private copy instead of a crash (torch ignores numpy's read-only flag). Before use an entry is checked:
index parseable with its own CRC, key as expected, every file present with its recorded size, shape,
dtype and CRC-32 (a CRC as in the stage cache's zip files: it catches truncation, bit rot and edits, not
a forger who also rewrites the index). A failed check logs a warning, moves the entry aside and rebuilds.

Writing. The first process takes an exclusive lock (``fcntl.flock`` on ``<entry>.lock``, released by the
kernel if the process dies), so concurrent trials wait for one build. The entry is written into a temporary
directory, renamed into place and never modified afterwards (a mapped file that shrinks under a reader kills
it with SIGBUS): a stale or corrupt entry is renamed aside before it is deleted, so processes mapping it keep
their pages; a process that loses a rename race (no lock, e.g. on Windows) discards its copy. The build loads
chunks of the record list in a process pool (``workers``, default: the CPUs this process may use;
``_pool_context``) through the loader's own ``ecg_ids`` / ``records`` argument and concatenates them in
order, so the result, skipped records and the first error raised are those of the serial loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import scipy
import torch

from tgdp.data.cpsc import load_cpsc, read_reference
from tgdp.data.ecg import ECGDataError, ECGDataset
from tgdp.data.ptbxl import checked_rows, load_ptbxl, read_ptbxl_database, read_scp_statements

FORMAT_VERSION = 1  # bump when the entry layout changes (old entries are then never matched)
SUBDIR = "ecg-data"  # entries live in <cache_dir>/ecg-data
_CODE_MODULES = ("tgdp.data.ecg", "tgdp.data.wfdb_io", "tgdp.data.ptbxl", "tgdp.data.cpsc", __name__)
_CHUNKS_PER_WORKER = 2  # more chunks balance CPSC's uneven lengths better, but each re-reads the index CSV
_MIN_PARALLEL_RECORDS = 2000  # below this a pool costs more than it saves (its server imports torch: 3 s CPU)
log = logging.getLogger("tgdp.ecg_cache")


# --- the loaders it wraps: kind -> (loader, its id argument, ordered ids it would read) -------------------

def _ptbxl_ids(root: str, options: dict[str, Any]) -> tuple[list[Any], list] | None:
    """ecg_ids load_ptbxl reads for ``options``, in its order (ecg_id; fold filter; limit), and the skips
    it makes before reading (none); None when the serial loader must run (it raises for the input)."""
    read_scp_statements(root)  # the loader's first check, so a missing file raises the same error
    try:  # ids and folds as the loader checks them (int index, sorted); a bad row: the serial loader decides
        table, skipped = checked_rows(read_ptbxl_database(root), skip_bad=bool(options.get("skip_bad")))
    except ECGDataError:
        return None
    if skipped:
        return None
    if options.get("ecg_ids") is not None:
        wanted = {int(i) for i in options["ecg_ids"]}
        if wanted - set(table.index):
            return None
        table = table.loc[sorted(wanted)]
    if options.get("folds") is not None:
        table = table[table["strat_fold"].astype(int).isin([int(f) for f in options["folds"]])]
    ids = [int(i) for i in table.index]
    return (ids if options.get("limit") is None else ids[: options["limit"]]), []


def _cpsc_ids(root: str, options: dict[str, Any]) -> tuple[list[Any], list] | None:
    """Records load_cpsc reads (sorted; records filter; limit) and the label rows it skips before them;
    None when the serial loader must run (it raises for the input)."""
    labels, skipped = read_reference(root, skip_bad=bool(options.get("skip_bad", False)))
    ids = sorted(labels)
    if options.get("records") is not None:
        wanted = set(options["records"])
        if wanted - set(labels) - {s[0] for s in skipped}:
            return None
        ids = sorted(wanted & set(labels))
    return (ids if options.get("limit") is None else ids[: options["limit"]]), skipped


LOADERS: dict[str, tuple[Callable[..., ECGDataset], str, Callable[[str, dict], tuple[list, list] | None]]] = {
    "ptbxl": (load_ptbxl, "ecg_ids", _ptbxl_ids),
    "cpsc2018": (load_cpsc, "records", _cpsc_ids),
}


# --- the key --------------------------------------------------------------------------------------------

def file_list_digest(root: str, *, exclude: str = "") -> str:
    """SHA-256 of (relative name, size, mtime_ns) of every file under ``root`` but ``exclude``, by name."""
    h = hashlib.sha256()
    entries = []
    top = os.path.abspath(root)
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    if e.path != exclude:
                        stack.append(e.path)
                else:
                    st = e.stat(follow_symlinks=True)
                    entries.append((e.path[len(top) + 1:], st.st_size, st.st_mtime_ns))  # relative name
    for name, size, mtime in sorted(entries):
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def code_digest() -> str:
    """SHA-256 of the loader modules' source text and the numpy/scipy versions (the code version)."""
    h = hashlib.sha256(f"numpy {np.__version__} scipy {scipy.__version__}\n".encode())
    for name in _CODE_MODULES:
        with open(sys.modules[name].__file__, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def entry_key(kind: str, root: str, options: dict[str, Any], *, exclude: str = "") -> str:
    """The entry key (module doc): file list, loader and options, code version."""
    described = {"format": FORMAT_VERSION, "kind": kind, "root": os.path.abspath(root),
                 "options": _jsonable(options), "files": file_list_digest(root, exclude=exclude),
                 "code": code_digest()}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


# --- public entry point ---------------------------------------------------------------------------------

def load_cached(kind: str, root: str, cache_dir: str | os.PathLike, *, workers: int | None = None,
                **options: Any) -> ECGDataset:
    """The loader ``kind``'s dataset for ``(root, **options)``, from the cache (built first if missing,
    stale or corrupt). Equal to ``LOADERS[kind][0](root, **options)`` field by field; x, y, lengths and
    y_full are memory-mapped (copy-on-write). Loader errors propagate unchanged; nothing is written then."""
    if kind not in LOADERS:
        raise ValueError(f"kind: unknown ECG loader {kind!r}; allowed: {sorted(LOADERS)}")
    options = _with_defaults(LOADERS[kind][0], root, options)  # {} and {"min_length": 500}: one entry
    base = os.path.abspath(os.path.join(os.fspath(cache_dir), SUBDIR))
    key = entry_key(kind, root, options, exclude=os.path.abspath(os.fspath(cache_dir)))
    final = os.path.join(base, f"{kind}-{key[:24]}")
    found = _open_valid(final, key)
    if found is not None:
        return found
    with contextlib.suppress(OSError):  # an unusable directory is reported (and bypassed) by _publish
        os.makedirs(base, exist_ok=True)
    with _exclusive(final + ".lock"):
        found = _open_valid(final, key)  # another process may have built it while we waited
        if found is not None:
            return found
        t0 = time.perf_counter()
        dataset, used, pool_cpu = _build(kind, root, options, workers)
        _publish(dataset, final, key, {"kind": kind, "root": os.path.abspath(root), "options": _jsonable(options),
                                       "build_seconds": round(time.perf_counter() - t0, 2), "workers": used,
                                       "pool_cpu_seconds": round(pool_cpu, 2)})
    found = _open_valid(final, key)
    return found if found is not None else dataset  # unwritable/vanished entry: still the loader's result


# --- building (the cold load) ---------------------------------------------------------------------------

def _build(kind: str, root: str, options: dict[str, Any], workers: int | None) -> tuple[ECGDataset, int, float]:
    """(the dataset, processes used, CPU seconds of the pool's chunks), loaded in ordered chunks by a process
    pool (serially when small or workers <= 1)."""
    loader, id_arg, list_ids = LOADERS[kind]
    workers = workers or available_cpus()
    listed = list_ids(root, options) if workers > 1 else None
    if listed is None or len(listed[0]) < _MIN_PARALLEL_RECORDS:
        return loader(root, **options), 1, 0.0
    ids, prior_skips = listed
    n_chunks = min(len(ids), workers * _CHUNKS_PER_WORKER)
    bounds = np.linspace(0, len(ids), n_chunks + 1).astype(int)
    chunk_options = {k: v for k, v in options.items() if k not in ("limit", id_arg)}
    jobs = [(kind, root, chunk_options, id_arg, ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        done = list(pool.map(_load_chunk, jobs))
    parts = [part for part, _ in done]
    for part in parts:  # the serial loader raises the first bad record in order: so do we
        if isinstance(part, tuple):
            raise ECGDataError(*part)
    return _concat(parts, prior_skips), workers, sum(cpu for _, cpu in done)


def _pool_context() -> multiprocessing.context.BaseContext:
    """"forkserver" where available (workers fork from a single-threaded server that imported the loaders
    once: safe in a threaded Ray worker, no torch import per worker), else "spawn". The server stays."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # no effect once a forkserver runs: slower, still correct
    return ctx


def _load_chunk(job: tuple) -> tuple[ECGDataset | tuple[str, str], float]:
    """One chunk in a pool worker, and its CPU seconds; an ECGDataError comes back as (record, problem)
    (its two-argument constructor does not survive pickling)."""
    kind, root, options, id_arg, ids = job
    c0 = time.process_time()
    try:
        out: ECGDataset | tuple[str, str] = LOADERS[kind][0](root, **options, **{id_arg: ids})
    except ECGDataError as exc:
        out = exc.record, exc.problem
    return out, time.process_time() - c0


def _concat(parts: Sequence[ECGDataset], prior_skips: list) -> ECGDataset:
    """Chunks in order -> one dataset. Every chunk repeats the skips made before the records are read
    (CPSC label rows): kept once, in front. Meta dicts (fs_read, codes) are merged in order."""
    first = parts[0]
    n_prior = len(prior_skips)
    meta = {k: ({} if isinstance(v, dict) else v) for k, v in first.meta.items()}
    for p in parts:
        for k, v in p.meta.items():
            if isinstance(v, dict):
                meta[k].update(v)

    def cat(name: str) -> torch.Tensor | None:
        return None if getattr(first, name) is None else torch.cat([getattr(p, name) for p in parts])

    return replace(first, x=cat("x"), y=cat("y"), lengths=cat("lengths"), y_full=cat("y_full"),
                   record_ids=tuple(r for p in parts for r in p.record_ids),
                   folds=None if first.folds is None else tuple(f for p in parts for f in p.folds),
                   skipped=tuple(first.skipped[:n_prior]) + tuple(s for p in parts for s in p.skipped[n_prior:]),
                   meta=meta)


# --- the entry on disk ----------------------------------------------------------------------------------

def _arrays(dataset: ECGDataset) -> dict[str, np.ndarray]:
    out = {"x": dataset.x, "y": dataset.y, "lengths": dataset.lengths, "y_full": dataset.y_full,
           "folds": None if dataset.folds is None else torch.tensor(dataset.folds, dtype=torch.int64)}
    return {name: t.numpy() for name, t in out.items() if t is not None}


def _publish(dataset: ECGDataset, final: str, key: str, build: dict[str, Any]) -> None:
    """Write the entry into a temporary directory, then rename it to ``final`` (atomic on one filesystem)."""
    try:
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(final))
    except OSError as exc:  # a read-only or unusable cache directory: the trial still gets its data
        log.warning("ECG data cache: cannot write under %s (%s); the data stays uncached", final, exc)
        return
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        arrays = {}
        for name, arr in _arrays(dataset).items():
            path = os.path.join(tmp, f"{name}.npy")
            np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
            arrays[name] = {"file": f"{name}.npy", "shape": list(arr.shape), "dtype": arr.dtype.str,
                            "bytes": os.path.getsize(path), "crc32": _file_crc(path)}
        index = {"format": FORMAT_VERSION, "key": key, "arrays": arrays, "record_ids": list(dataset.record_ids),
                 "skipped": [list(s) for s in dataset.skipped], "label_names_full": list(dataset.label_names_full),
                 "source": dataset.source, "meta": _jsonable(dataset.meta), "build": build}
        index["index_crc32"] = _json_crc(index)
        with open(os.path.join(tmp, "index.json"), "w", encoding="utf-8") as f:
            json.dump(index, f)
        if os.path.exists(final):  # a stale or corrupt entry (we hold the lock): move it aside first
            _discard(final)
        os.rename(tmp, final)
    except OSError as exc:  # lost a rename race (the other copy is identical) or the disk refused
        if not os.path.isdir(final):
            log.warning("ECG data cache: could not write %s (%s); the data stays uncached", final, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open_valid(final: str, key: str) -> ECGDataset | None:
    """The entry as a dataset if it passes every check; a failing one is moved aside (None)."""
    if not os.path.isdir(final):
        return None
    try:
        return _open(final, key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ECG data cache: corrupt entry %s (%s); moved aside, the data is loaded again", final, exc)
        _discard(final)
        return None


def _open(final: str, key: str) -> ECGDataset:
    with open(os.path.join(final, "index.json"), encoding="utf-8") as f:
        index = json.load(f)
    crc = index.pop("index_crc32", None)
    if crc != _json_crc(index) or index.get("format") != FORMAT_VERSION or index.get("key") != key:
        raise ValueError("index.json does not match its checksum, format or key")
    arrays = {}
    for name, info in index["arrays"].items():
        path = os.path.join(final, info["file"])
        if os.path.getsize(path) != info["bytes"]:
            raise ValueError(f"{info['file']} has {os.path.getsize(path)} bytes, the index says {info['bytes']}")
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
        if list(arr.shape) != info["shape"] or arr.dtype.str != info["dtype"]:
            raise ValueError(f"{info['file']} is {arr.dtype.str} {arr.shape}, not {info['dtype']} {info['shape']}")
        if _file_crc(path) != info["crc32"]:
            raise ValueError(f"{info['file']} fails its CRC-32")
        arrays[name] = arr
    if any(a.shape[0] != len(index["record_ids"]) for a in arrays.values()):
        raise ValueError("the arrays do not all have one row per record id")
    folds = arrays.get("folds")
    return ECGDataset(
        x=torch.from_numpy(arrays["x"]), y=torch.from_numpy(arrays["y"]), lengths=torch.from_numpy(arrays["lengths"]),
        record_ids=tuple(index["record_ids"]), folds=None if folds is None else tuple(int(v) for v in folds),
        y_full=torch.from_numpy(arrays["y_full"]) if "y_full" in arrays else None,
        label_names_full=tuple(index["label_names_full"]), source=index["source"],
        skipped=tuple((str(r), str(p)) for r, p in index["skipped"]), meta=_from_jsonable(index["meta"]))


def _discard(final: str) -> None:
    """Move an entry aside (rename, so a reader never sees it half-deleted) and delete it."""
    aside = f"{final}.corrupt-{os.getpid()}-{time.time_ns()}"
    with contextlib.suppress(OSError):
        os.rename(final, aside)
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` for the build; a no-op where flock is unavailable."""
    try:
        import fcntl
        f = open(path, "a+b")  # noqa: SIM115 - closed by the with below
    except (ImportError, OSError):  # not POSIX, or read-only: the atomic rename keeps the entry consistent
        yield
        return
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- small helpers --------------------------------------------------------------------------------------

def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _with_defaults(loader: Callable[..., ECGDataset], root: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the loader's defaults filled in (a TypeError names an unknown option)."""
    bound = inspect.signature(loader).bind(root, **options)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != "root"}


def _file_crc(path: str, block: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc


def _json_crc(obj: Any) -> int:
    return zlib.crc32(json.dumps(obj, sort_keys=True).encode())


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy that remembers tuples (CPSC meta codes are tuples): {"__tuple__": [...]}."""
    if isinstance(obj, tuple):
        return {"__tuple__": [_jsonable(v) for v in obj]}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tuple__"}:
            return tuple(_from_jsonable(v) for v in obj["__tuple__"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


__all__ = ["FORMAT_VERSION", "LOADERS", "SUBDIR", "available_cpus", "entry_key", "file_list_digest", "load_cached"]
