"""Download files with SHA-256 verification and a clear error when offline.

Generic helpers shared by every real data loader (Multi30k, CIFAR-10, ISBI 2012):

* :func:`data_dir` -- where data sets live: ``$COURSE_DATA_DIR`` or ``~/.cache/course``.
* :func:`download` -- fetch one URL to a path, atomically, with a progress bar and a
  checksum check. A partial or corrupt file is never left behind.
* :func:`fetch` -- return a verified local copy, downloading it only when missing.

Offline machines pre-fetch the files into a folder with the same layout and point
``COURSE_DATA_DIR`` at it; nothing is then downloaded.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm  # plain bar: tqdm.auto warns on stderr without ipywidgets

__all__ = ["DataError", "data_dir", "sha256sum", "download", "fetch"]

ENV_DATA_DIR = "COURSE_DATA_DIR"
_CHUNK = 1 << 20  # bytes read per step while downloading and hashing
_TIMEOUT_S = 60.0  # socket timeout for one download
# errors that mean "could not get the bytes" (not e.g. a full disk while writing them)
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    socket.gaierror,
    TimeoutError,
    ConnectionError,
)


class DataError(RuntimeError):
    """A data file is missing, corrupt, or could not be downloaded."""


def data_dir() -> Path:
    """Root folder for data sets: ``$COURSE_DATA_DIR`` if set, else ``~/.cache/course``.

    The folder is not created here; :func:`download` creates what it needs.
    """
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "course"


def sha256sum(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 digest of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _offline_message(url: str, dest: Path, err: BaseException) -> str:
    name = dest.name
    return (
        f"could not download {url!r} ({type(err).__name__}: {err}).\n"
        f"Looked for a local copy at {str(dest)!r} and found none.\n"
        f"If this machine is offline, fetch the file elsewhere and either put it at that "
        f"path, or set the environment variable {ENV_DATA_DIR} to a folder that holds it "
        f"in the same layout (e.g. {ENV_DATA_DIR}=/path/to/data with "
        f"/path/to/data/{dest.parent.name}/{name})."
    )


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None,
    *,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and check its SHA-256; return ``dest``.

    The bytes go to a temporary file beside ``dest`` that is renamed onto ``dest`` only
    after the checksum matched, so ``dest`` is either complete and verified or absent (and
    folders created for it are removed again when the download fails).

    Args:
        url: any URL ``urllib`` can open (``https://``, ``file://``).
        dest: final path; parent folders are created.
        sha256: expected hex digest, or None to skip the check.
        progress: show a tqdm progress bar (on stderr).

    Raises:
        DataError: the URL could not be fetched (offline, HTTP error, timeout), or the
            downloaded bytes do not have the expected checksum.
    """
    dest = Path(dest)
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    ok = False
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
                    length = resp.headers.get("Content-Length") if resp.headers else None
                    total = int(length) if length and length.isdigit() else None
                    with tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=not progress,
                        leave=False,
                    ) as bar:
                        for chunk in iter(lambda: resp.read(_CHUNK), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
            except _NETWORK_ERRORS as err:
                raise DataError(_offline_message(url, dest, err)) from err
        if sha256 is not None:
            actual = sha256sum(tmp)
            if actual.lower() != sha256.lower():
                raise DataError(
                    f"checksum mismatch for {dest.name} downloaded from {url!r}: "
                    f"expected sha256 {sha256.lower()}, got {actual}. The download was "
                    f"deleted; retry, or fetch the file by hand into {str(dest.parent)!r}."
                )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, dest)
        ok = True
    finally:
        tmp.unlink(missing_ok=True)
        if not ok:  # a failed download leaves no empty folders behind
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty (another file arrived) or not ours to remove
    return dest


def fetch(
    name_in_dir: str,
    url: str,
    sha256: str | None,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Path:
    """Return the verified file ``<root>/<name_in_dir>``, downloading it if missing.

    Args:
        name_in_dir: relative path under ``root``, e.g. ``"multi30k/train.de.gz"``.
        url: where to download it from when it is missing.
        sha256: expected hex digest, or None to accept any content.
        root: data folder; default :func:`data_dir`.
        download: if False, a missing file is an error instead of a download.

    Raises:
        DataError: the file is present but has the wrong checksum (it is not re-used
            nor overwritten), or it is missing and could not (or may not) be downloaded.
    """
    root_path = Path(root).expanduser() if root is not None else data_dir()
    path = root_path / name_in_dir
    if path.is_file():
        if sha256 is not None:
            actual = sha256sum(path)
            if actual.lower() != sha256.lower():
                raise DataError(
                    f"{str(path)!r} exists but its checksum is wrong: expected sha256 "
                    f"{sha256.lower()}, got {actual}. It is corrupt or a different "
                    f"version; delete it to download it again from {url!r}."
                )
        return path
    if not download:
        raise DataError(
            f"{str(path)!r} not found and download=False. Put the file there "
            f"(source: {url!r}), or set {ENV_DATA_DIR} to a folder holding {name_in_dir!r}."
        )
    return _download(url, path, sha256)


_download = download  # `fetch` has a parameter named `download`


def cached_root(name: str, expected: Iterable[str], write: Callable[[Path], object]) -> Path:
    """``<system temp>/<name>``, written once by ``write(folder)`` and reused after.

    ``expected`` lists the files (relative to the root) that make the copy complete; an
    incomplete copy is rebuilt. Safe when several processes race: each writes into its own
    temporary folder, which is renamed into place; a loser discards its copy.
    """
    base = Path(tempfile.gettempdir())
    root = base / name
    expected = list(expected)

    def complete() -> bool:
        return all((root / rel).is_file() for rel in expected)

    if complete():
        return root
    if root.exists():  # incomplete (e.g. files deleted by hand): rebuild
        shutil.rmtree(root, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        try:
            os.rename(tmp, root)
        except OSError:
            if not complete():  # someone else holds the name but it is not usable
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
