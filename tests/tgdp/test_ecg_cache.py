"""The preprocessed ECG data cache (tgdp.data.ecg_cache): same data as the loaders, invalidation, corrupt and
tampered entries, concurrent writers, nothing unpickled. Real records (tests/data/ecg and, when set,
$TGDP_REAL_ECG_DIR) and tiny simulated layouts."""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tgdp.data import ecg_cache
from tgdp.data.cpsc import load_cpsc
from tgdp.data.ecg import ECGDataError, ECGDataset
from tgdp.data.ecg_cache import SUBDIR, load_cached
from tgdp.data.ecg_sim import write_simulated_dataset
from tgdp.data.ptbxl import load_ptbxl

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "ecg"
REAL_DIR = os.environ.get("TGDP_REAL_ECG_DIR")
LOADER = {"ptbxl": load_ptbxl, "cpsc2018": load_cpsc}
ROOTS = [("ptbxl", FIXTURES / "ptbxl"), ("cpsc2018", FIXTURES / "cpsc2018")]
if REAL_DIR and os.path.isdir(REAL_DIR):
    ROOTS += [("ptbxl", Path(REAL_DIR) / "ptbxl"), ("cpsc2018", Path(REAL_DIR) / "cpsc2018")]


def assert_same(a: ECGDataset, b: ECGDataset) -> None:
    """Every field equal: tensors bit for bit, ids, folds, labels, skipped records and meta."""
    for name in ("x", "y", "lengths", "y_full"):
        u, v = getattr(a, name), getattr(b, name)
        assert (u is None and v is None) or (u.dtype == v.dtype and torch.equal(u, v)), name
    for name in ("record_ids", "folds", "label_names_full", "source", "skipped", "meta"):
        assert getattr(a, name) == getattr(b, name), name


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / SUBDIR).iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    """Tiny simulated layouts (30 PTB-XL, 24 CPSC records), written once per module; copy before editing."""
    base = tmp_path_factory.mktemp("sim")
    write_simulated_dataset(str(base / "ptbxl"), "source", 30, seed=0)
    write_simulated_dataset(str(base / "cpsc2018"), "target", 24, seed=1)
    return {"ptbxl": base / "ptbxl", "cpsc2018": base / "cpsc2018"}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _no_loader(monkeypatch) -> None:
    """From here on running a loader fails: a load must come from the cache."""
    def refusing(loader):
        @functools.wraps(loader)  # same signature: the key fills in the loader's defaults
        def refuse(*_a, **_k):
            raise AssertionError("the loader ran: the cache was not used")
        return refuse
    monkeypatch.setattr(ecg_cache, "LOADERS", {k: (refusing(v[0]), *v[1:]) for k, v in ecg_cache.LOADERS.items()})


# --- same data as the loaders ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind,root", ROOTS, ids=[f"{k}-{r.parent.name}" for k, r in ROOTS])
def test_cache_returns_exactly_the_loaders_dataset_real_records(kind, root, tmp_path, monkeypatch):
    expected = LOADER[kind](str(root), skip_bad=True)
    cold = load_cached(kind, str(root), tmp_path, skip_bad=True)
    assert_same(cold, expected)  # built entry == the loader
    _no_loader(monkeypatch)
    warm = load_cached(kind, str(root), tmp_path, skip_bad=True)
    assert_same(warm, expected)  # mapped entry == the loader, without reading a record
    assert len(entries(tmp_path)) == 1


def test_parallel_build_merges_chunks_like_the_serial_loader(sim, tmp_path, monkeypatch):
    # the process pool loads ordered chunks through the loader's own id argument; the merge must give the
    # serial loader's rows, skipped list (CPSC label rows first, then broken records in order) and meta
    monkeypatch.setattr(ecg_cache, "_MIN_PARALLEL_RECORDS", 0)
    cpsc = _copy(sim["cpsc2018"], tmp_path / "cpsc")
    ref = (cpsc / "REFERENCE.csv").read_bytes().replace(b"A0005,", b"A0005,X", 1)  # a bad label row
    (cpsc / "REFERENCE.csv").write_bytes(ref)
    with open(cpsc / "A0017.mat", "r+b") as f:  # a truncated record in a later chunk
        f.truncate(1000)
    expected = load_cpsc(str(cpsc), skip_bad=True)
    assert [s[0] for s in expected.skipped] == ["A0005", "A0017"]
    got = load_cached("cpsc2018", str(cpsc), tmp_path / "cache", workers=2, skip_bad=True)
    assert_same(got, expected)
    build = json.loads((entries(tmp_path / "cache")[0] / "index.json").read_text())["build"]
    assert build["workers"] == 2  # the pool really ran


def test_parallel_build_ptbxl_folds_labels_and_meta(sim, tmp_path, monkeypatch):
    # PTB-XL's extra fields (folds, y_full, meta fs_read) through the pool, with a limit
    monkeypatch.setattr(ecg_cache, "_MIN_PARALLEL_RECORDS", 0)
    got = load_cached("ptbxl", str(sim["ptbxl"]), tmp_path, workers=2, limit=25)
    assert_same(got, load_ptbxl(str(sim["ptbxl"]), limit=25))


def test_a_broken_record_raises_like_the_loader_and_writes_nothing(sim, tmp_path):
    cpsc = _copy(sim["cpsc2018"], tmp_path / "cpsc")
    with open(cpsc / "A0003.mat", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ECGDataError) as direct:
        load_cpsc(str(cpsc))
    with pytest.raises(ECGDataError) as cached:
        load_cached("cpsc2018", str(cpsc), tmp_path / "cache")
    assert str(cached.value) == str(direct.value) and cached.value.record == "A0003"
    assert entries(tmp_path / "cache") == []  # no entry for a failed load


def test_an_unusable_cache_directory_still_returns_the_data(sim, tmp_path, caplog):
    # a cache path that cannot be created (under a regular file; root ignores permission bits): the
    # trial gets the loader's data and a warning, not a crash
    (tmp_path / "file").write_text("not a directory")
    got = load_cached("cpsc2018", str(sim["cpsc2018"]), tmp_path / "file" / "cache")
    assert_same(got, load_cpsc(str(sim["cpsc2018"])))
    assert "stays uncached" in caplog.text


# --- invalidation ---------------------------------------------------------------------------------------

def test_changed_file_or_loader_config_invalidates(sim, tmp_path):
    cpsc = _copy(sim["cpsc2018"], tmp_path / "cpsc")
    cache = tmp_path / "cache"
    first = load_cached("cpsc2018", str(cpsc), cache)
    # a second label for a single-label record: one byte more in REFERENCE.csv (a size change)
    ref = cpsc / "REFERENCE.csv"
    lines = ref.read_bytes().split(b"\r\n")
    k = next(i for i, ln in enumerate(lines) if ln.endswith(b",,") and i > 0)
    name, code = lines[k].split(b",")[:2]
    lines[k] = b",".join([name, code, b"1" if code != b"1" else b"2", b""])
    ref.write_bytes(b"\r\n".join(lines))
    changed = load_cached("cpsc2018", str(cpsc), cache)
    assert_same(changed, load_cpsc(str(cpsc)))  # the new labels, not the stale entry
    assert not torch.equal(changed.y, first.y) and len(entries(cache)) == 2
    hea = cpsc / "A0002.hea"
    os.utime(hea, ns=(hea.stat().st_atime_ns, hea.stat().st_mtime_ns + 10**9))  # the mtime alone
    load_cached("cpsc2018", str(cpsc), cache)
    assert len(entries(cache)) == 3
    shorter = load_cached("cpsc2018", str(cpsc), cache, min_length=600)  # another loader option
    assert len(entries(cache)) == 4
    assert_same(shorter, load_cpsc(str(cpsc), min_length=600))
    load_cached("cpsc2018", str(cpsc), cache)
    load_cached("cpsc2018", str(cpsc), cache, min_length=500, skip_bad=False)  # the defaults, spelled out
    assert len(entries(cache)) == 4  # unchanged inputs: the existing entry is used


def test_code_version_is_part_of_the_key(sim, monkeypatch):
    before = ecg_cache.entry_key("ptbxl", str(sim["ptbxl"]), {})
    monkeypatch.setattr(ecg_cache, "code_digest", lambda: "another loader version")
    assert ecg_cache.entry_key("ptbxl", str(sim["ptbxl"]), {}) != before


# --- corrupt, tampered, pickled ---------------------------------------------------------------------------

def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("damage", ["truncate x", "flip a bit of x", "flip a bit of lengths", "edit index",
                                    "delete y_full"])
def test_corrupt_or_tampered_entry_is_rebuilt(damage, sim, tmp_path, caplog):
    cache = tmp_path / "cache"
    load_cached("ptbxl", str(sim["ptbxl"]), cache)  # not kept: its arrays map the files damaged below
    expected = load_ptbxl(str(sim["ptbxl"]))
    entry = entries(cache)[0]
    if damage == "truncate x":
        with open(entry / "x.npy", "r+b") as f:
            f.truncate(os.path.getsize(entry / "x.npy") // 2)
    elif damage == "flip a bit of x":
        _flip(entry / "x.npy", os.path.getsize(entry / "x.npy") - 7)  # same size: only the CRC sees it
    elif damage == "flip a bit of lengths":
        _flip(entry / "lengths.npy", os.path.getsize(entry / "lengths.npy") - 8)
    elif damage == "edit index":
        index = json.loads((entry / "index.json").read_text())
        index["record_ids"][0] = "999"
        (entry / "index.json").write_text(json.dumps(index))
    else:
        (entry / "y_full.npy").unlink()
    got = load_cached("ptbxl", str(sim["ptbxl"]), cache)
    assert_same(got, expected)  # rebuilt from the records, not the damaged values
    assert "corrupt entry" in caplog.text  # said so
    assert len(entries(cache)) == 1 and not any(p.name.startswith(".tmp-") for p in (cache / SUBDIR).iterdir())
    caplog.clear()
    assert_same(load_cached("ptbxl", str(sim["ptbxl"]), cache), expected)
    assert "corrupt entry" not in caplog.text  # the rebuilt entry is valid


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"ecg-cache-unpickled-{os.getpid()}"


def _unpickled() -> None:
    MARKER.write_text("the cache unpickled an object")


class Payload:
    def __reduce__(self):
        return _unpickled, ()


def test_nothing_is_unpickled_even_from_a_forged_index(sim, tmp_path):
    # a forger replaces y.npy by a pickled object array and rewrites the index to match (size, CRC, dtype,
    # shape): np.load(allow_pickle=False) is then the last line, and the entry is rebuilt
    cache = tmp_path / "cache"
    load_cached("ptbxl", str(sim["ptbxl"]), cache)  # not kept: its arrays map the file replaced below
    expected = load_ptbxl(str(sim["ptbxl"]))
    entry = entries(cache)[0]
    MARKER.unlink(missing_ok=True)
    np.save(entry / "y.npy", np.array([Payload()] * len(expected), dtype=object), allow_pickle=True)
    index = json.loads((entry / "index.json").read_text())
    index.pop("index_crc32")
    index["arrays"]["y"].update(bytes=os.path.getsize(entry / "y.npy"), crc32=ecg_cache._file_crc(str(entry / "y.npy")),
                                dtype="|O", shape=[len(expected)])
    index["index_crc32"] = ecg_cache._json_crc(index)
    (entry / "index.json").write_text(json.dumps(index))
    got = load_cached("ptbxl", str(sim["ptbxl"]), cache)
    assert not MARKER.exists()  # never unpickled
    assert_same(got, expected)


# --- concurrent writers ---------------------------------------------------------------------------------

def _race_load(args: tuple[str, str]) -> list[str]:
    root, cache = args
    return list(load_cached("cpsc2018", root, cache).record_ids)


def test_two_processes_end_with_one_valid_entry(sim, tmp_path):
    cache = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        ids = pool.map(_race_load, [(str(sim["cpsc2018"]), cache)] * 2)
    assert ids[0] == ids[1] == list(load_cpsc(str(sim["cpsc2018"])).record_ids)
    names = [p.name for p in (tmp_path / "cache" / SUBDIR).iterdir()]
    assert len(entries(tmp_path / "cache")) == 1 and not any(n.startswith(".tmp-") for n in names)


def test_two_writers_racing_without_the_lock_end_with_one_valid_entry(sim, tmp_path, monkeypatch, caplog):
    # no lock (as where flock is unavailable): both build and both rename; one rename wins, the loser
    # discards its copy, both callers get the data and the entry left behind is valid
    monkeypatch.setattr(ecg_cache, "_exclusive", lambda _path: contextlib.nullcontext())
    barrier = threading.Barrier(2)
    build = ecg_cache._build

    def build_then_wait(*args):
        out = build(*args)
        barrier.wait(timeout=60)  # both have built before either publishes
        return out

    monkeypatch.setattr(ecg_cache, "_build", build_then_wait)
    cache = tmp_path / "cache"
    results: list[ECGDataset] = []
    threads = [threading.Thread(target=lambda: results.append(load_cached("ptbxl", str(sim["ptbxl"]), cache)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    expected = load_ptbxl(str(sim["ptbxl"]))
    assert len(results) == 2 and all(assert_same(r, expected) is None for r in results)
    assert len(entries(cache)) == 1 and not any(p.name.startswith(".tmp-") for p in (cache / SUBDIR).iterdir())
    monkeypatch.setattr(ecg_cache, "_build", lambda *a: pytest.fail("a valid entry was rebuilt"))
    assert_same(load_cached("ptbxl", str(sim["ptbxl"]), cache), expected)
