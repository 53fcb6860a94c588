"""Signatures of the Ray Tune files that ``resume`` unpickles, keyed by a secret outside the study.

Ray Tune restores an experiment with pickle: ``tuner.pkl``, ``searcher-state-*.pkl``, the cloudpickled
trial states inside ``experiment_state-*.json``, a trial's ``error.pkl``. A file planted in
``<study>/ray/<experiment>/`` would run its code on ``resume``. So the driver signs what it (and Tune in
its process) wrote, and ``resume`` verifies before ``Tuner.restore``:

- the secret: 32 random bytes (hex) in ``$TGDP_STUDY_SECRET_FILE`` or ``~/.config/tgdp-study/secret``,
  created on first use with mode 0600; it must be a regular file of ours, unreadable by others, and not
  inside the study directory (whoever can write the study could then forge signatures);
- the manifest ``<study>/signatures.json``: per signed file (path relative to the study), the sha256 of
  its last few contents the driver wrote, and an HMAC-SHA256 of the whole under the secret;
- signed files (``SIGNED``): every ``*.pkl`` at any depth of ``ray/<experiment>/`` and the ``*.json`` at
  its top level (experiment and searcher-generator state); trial checkpoints (``trial_state.pt``) and
  stage-cache entries are read weights-only and need no signature;
- when: after the ``Tuner`` is built (``tuner.pkl``), at each Tune experiment checkpoint
  (``study.callback.StudyCallback.get_state``: Tune's driver staging copy, which Tune then copies
  unchanged into the study), and after ``fit`` returns. Several recent contents stay valid per file, so a
  driver killed while Tune was still copying its last checkpoint resumes from either version.

A missing or failing signature is a ``UserError`` naming the file; nothing has been unpickled then.
Ray Train's own storage (``ray/_train_runs``, shared stages) holds JSON and weights-only files only and
is not signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from study import UserError
from study.paths import StudyPaths
from study.safe_io import open_nofollow, write_text

SECRET_ENV = "TGDP_STUDY_SECRET_FILE"
MANIFEST = "signatures.json"
KEEP = 8  # recent contents kept valid per file (Tune copies its staging directory asynchronously, one copy at a time)


class SignatureError(UserError):
    """A file Ray would unpickle is unsigned or its signature fails; or the secret is unusable."""


# --- the secret ------------------------------------------------------------------------------------------

def secret_file() -> Path:
    """``$TGDP_STUDY_SECRET_FILE`` or ``~/.config/tgdp-study/secret``."""
    return Path(os.environ.get(SECRET_ENV) or Path.home() / ".config" / "tgdp-study" / "secret").expanduser()


def load_secret(paths: StudyPaths | None = None, create: bool = True) -> bytes:
    """The secret's bytes, created (mode 0600) when missing and ``create``. Refused: a symlink, not a
    regular file, another owner, readable by group or others, or a file inside the study directory."""
    f = secret_file().absolute()
    if paths is not None and (f.resolve() == paths.root or paths.root in f.resolve().parents):
        raise SignatureError(f"{SECRET_ENV}={f}: the secret lies inside the study directory {paths.root}; "
                             "keep it where only you can write (default ~/.config/tgdp-study/secret)")
    if create and not f.exists() and not f.is_symlink():
        f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = open_nofollow(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another driver created it first
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
    try:
        fd = open_nofollow(f, os.O_RDONLY)
    except FileNotFoundError:
        raise SignatureError(f"{f}: no signing secret (it is created by `run`; set {SECRET_ENV} to the file the "
                             "study was signed with)") from None
    except UserError:  # a symlink: whoever controls its target would control the key
        raise SignatureError(f"{f}: unusable signing secret (a symbolic link)") from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        problem = ("not a regular file" if not stat.S_ISREG(st.st_mode) else
                   f"owned by uid {st.st_uid}, not you" if st.st_uid != os.getuid() else
                   f"mode {stat.S_IMODE(st.st_mode):o} lets others read or write it; chmod 600 it"
                   if st.st_mode & 0o077 else None)
        if problem:
            raise SignatureError(f"{f}: unusable signing secret ({problem})")
        key = src.read(4096).strip()
    if len(key) < 32:
        raise SignatureError(f"{f}: signing secret too short ({len(key)} bytes; at least 32)")
    return key


# --- the manifest ----------------------------------------------------------------------------------------

def signed_files(exp_dir: Path) -> dict[str, Path]:
    """The files of a Tune experiment directory that need a signature, by path relative to it."""
    out: dict[str, Path] = {}
    if not exp_dir.is_dir():
        return out
    for p in exp_dir.rglob("*"):
        rel = p.relative_to(exp_dir)
        if (p.suffix == ".pkl" or (p.suffix == ".json" and len(rel.parts) == 1)) and (p.is_file() or p.is_symlink()):
            out[rel.as_posix()] = p
    return out


def _digest(p: Path) -> str:
    fd = open_nofollow(p, os.O_RDONLY)  # a symlink is never signed nor trusted
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _mac(key: bytes, files: dict[str, list[str]]) -> str:
    return hmac.new(key, json.dumps(files, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def _read_manifest(paths: StudyPaths, key: bytes) -> dict[str, list[str]] | None:
    """The signed entries, or None when the manifest is missing, unreadable or its HMAC fails."""
    p = paths.root / MANIFEST
    try:
        data = json.loads(p.read_text())
        files, mac = data["files"], data["hmac"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) and hmac.compare_digest(str(mac), _mac(key, files)) else None


def sign(paths: StudyPaths, exp_dir: Path, source: Path | None = None, only: tuple[str, ...] = ()) -> None:
    """Add the current contents of ``exp_dir``'s signed files to the manifest (``source``: a directory
    holding the same relative paths that Tune will copy into ``exp_dir``, its driver staging directory;
    ``only``: just these relative paths, e.g. the ``tuner.pkl`` a new ``Tuner`` has just written)."""
    key = load_secret(paths)
    files = _read_manifest(paths, key) or {}  # a tampered manifest is dropped: its entries are untrusted
    prefix = exp_dir.relative_to(paths.root).as_posix()
    for rel, p in signed_files(source or exp_dir).items():
        if only and rel not in only:
            continue
        try:
            digest = _digest(p)
        except OSError:
            continue  # vanished or a symlink: not signed (and refused on verify)
        history = [d for d in files.get(f"{prefix}/{rel}", []) if d != digest]
        files[f"{prefix}/{rel}"] = (history + [digest])[-KEEP:]
    write_text(paths.root / MANIFEST, json.dumps({"files": files, "hmac": _mac(key, files)}, indent=1,
                                                 sort_keys=True), root=paths.root)


def verify(paths: StudyPaths, exp_dir: Path) -> None:
    """Refuse (``SignatureError`` naming the file) unless every signed file of ``exp_dir`` has a content
    the driver signed; run before anything in ``exp_dir`` is unpickled."""
    manifest = paths.root / MANIFEST
    needed = sorted(signed_files(exp_dir).items())
    files = _read_manifest(paths, load_secret(paths, create=False)) if needed and manifest.exists() else None
    for rel, p in needed:
        if files is None:
            why = "missing" if not manifest.exists() else "fails its HMAC (edited, or signed with another secret)"
            raise SignatureError(f"{p}: not verified, refusing to restore it: the signature manifest {manifest} "
                                 f"is {why}; see docs/security.md")
        try:
            digest = _digest(p)
        except UserError:
            raise SignatureError(f"{p}: a symbolic link where Ray keeps its state; refusing to restore it") from None
        if digest not in files.get(f"{exp_dir.relative_to(paths.root).as_posix()}/{rel}", []):
            raise SignatureError(f"{p}: signature check failed (not written by this study's driver, or changed "
                                 "since); refusing to restore it, see docs/security.md")


__all__ = ["MANIFEST", "SECRET_ENV", "SignatureError", "load_secret", "secret_file", "sign", "signed_files",
           "verify"]
