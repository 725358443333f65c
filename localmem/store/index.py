"""``Int8Index``: exact top-k search over INT8-quantized vectors, in native code.

Vectors are quantized per row, symmetrically (``scale = max|x| / 127``), and scored with
the best SIMD kernel this CPU has (see :func:`localmem.build_info`). Search is exact over
the codes; with ``keep_fp32=True`` the float vectors are kept too and ``rerank`` re-scores
the best candidates with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

import localmem.store.native  # noqa: F401  (warns of a kernel override it cannot honour)
from localmem import _core
from localmem._core import Int8Index as _Int8Index
from localmem.errors import InvalidArgumentError

IdsLike = npt.ArrayLike | Iterable[int]
Metric = Literal["ip", "cos"]


def _as_ids(ids: IdsLike, name: str = "ids") -> npt.NDArray[np.int64]:
    """Integer ids as a contiguous int64 array. Lists and other integer dtypes are converted
    when that is lossless; floats and overflowing values are refused."""
    if isinstance(ids, np.ndarray):
        arr = ids
    elif isinstance(ids, (int, np.integer)):
        arr = np.asarray([ids])
    else:
        arr = np.asarray(list(ids))  # type: ignore[arg-type]
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype != np.int64:
        if arr.dtype.kind not in "iu":
            raise InvalidArgumentError(f"{name} must be integers, got dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise InvalidArgumentError(f"{name} must fit in int64")
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr)


def _as_rows(x: npt.ArrayLike, name: str) -> tuple[np.ndarray, bool]:
    """A float32 matrix; a Python list is converted, an ndarray is passed as it is (the
    native side names the fix for a wrong dtype or layout). Returns (matrix, was_1d)."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        return arr.reshape(1, -1), True
    return arr, False


class Int8Index:
    """An in-memory INT8 vector index with exact top-k search.

    >>> index = Int8Index(384)
    >>> index.add([1, 2], vectors)            # float32, shape (2, 384)
    >>> ids, scores = index.search(queries, k=10)
    """

    def __init__(self, dim: int, *, metric: Metric = "ip") -> None:
        """Create an empty index of ``dim``-dimensional vectors.

        ``metric="ip"`` scores by inner product; ``"cos"`` normalizes every vector and query
        to unit length first, so scores are cosine similarities.
        """
        self._index = _Int8Index(dim, metric)

    @classmethod
    def _wrap(cls, native: _Int8Index) -> Int8Index:
        self = cls.__new__(cls)
        self._index = native
        return self

    @property
    def dim(self) -> int:
        """Dimensions of every vector."""
        return int(self._index.dim)

    @property
    def metric(self) -> Metric:
        """``"ip"`` or ``"cos"``."""
        return self._index.metric  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, id: object) -> bool:
        return isinstance(id, (int, np.integer)) and int(id) in self._index

    def __repr__(self) -> str:
        return f"Int8Index(dim={self.dim}, metric={self.metric!r}, len={len(self)})"

    @property
    def nbytes(self) -> int:
        """Bytes this index holds in memory (or maps from its file)."""
        return int(self._index.stats()["memory_bytes"])

    def stats(self) -> dict[str, int | bool]:
        """Live vectors, stored rows, tombstones, kept fp32 vectors, bytes, mapped or not."""
        return dict(self._index.stats())

    def add(self, ids: IdsLike, vectors: npt.ArrayLike, *, keep_fp32: bool = False) -> None:
        """Add vectors under integer ids.

        ``vectors`` is a C-contiguous float32 array of shape ``(len(ids), dim)`` (or one
        vector of shape ``(dim,)`` with one id). The whole batch is refused, and nothing
        changes, if a value is NaN or infinite or an id is already present
        (:class:`~localmem.errors.DuplicateIdError`). ``keep_fp32=True`` keeps the float
        vectors for re-ranking (4 bytes per dimension more).
        """
        rows, _ = _as_rows(vectors, "vectors")
        self._index.add(_as_ids(ids), rows, keep_fp32)

    def remove(self, ids: IdsLike, *, missing_ok: bool = False) -> int:
        """Remove ids; returns how many were removed.

        Unknown ids raise :class:`~localmem.errors.UnknownIdError` (and nothing is removed)
        unless ``missing_ok``. Space is reclaimed by :meth:`compact`, which also runs by
        itself once half of the stored rows are removed ones.
        """
        return int(self._index.remove(_as_ids(ids), missing_ok))

    def compact(self) -> int:
        """Reclaim the rows of removed vectors; returns how many were reclaimed."""
        return int(self._index.compact())

    def search(
        self,
        queries: npt.ArrayLike,
        k: int = 10,
        *,
        allow: IdsLike | None = None,
        deny: IdsLike | None = None,
        rerank: int = 0,
        threads: int | None = None,
        kernel: str | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact top-``k`` by score, best first.

        ``queries`` is float32 ``(n, dim)``; the result is ``(ids, scores)``, each of shape
        ``(n, min(k, len(self)))`` (``(min(k, len(self)),)`` for a single 1-D query). Where a
        filter leaves fewer hits than that, the rest is padded with id ``-1`` and score
        ``-inf``. Ties are broken by the smaller id.

        ``allow`` restricts results to these ids; ``deny`` excludes ids. ``rerank=r`` scores
        the best ``k * r`` candidates again with the fp32 vectors kept by
        ``add(..., keep_fp32=True)``. ``threads`` defaults to every core for a batch and one
        for a single query; the GIL is released while searching. ``kernel`` forces a SIMD
        kernel by name (for tests; see ``build_info()["kernels_available"]``).
        """
        rows, single = _as_rows(queries, "queries")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise InvalidArgumentError(f"k must be an integer, got {type(k).__name__}")
        if threads is None:
            threads = 1 if rows.shape[0] <= 1 else 0
        ids, scores = self._index.search(
            rows,
            int(k),
            None if allow is None else _as_ids(allow, "allow"),
            None if deny is None else _as_ids(deny, "deny"),
            int(rerank),
            int(threads),
            kernel,
        )
        if single:
            return ids[0], scores[0]
        return ids, scores

    def get_codes(self, ids: IdsLike) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
        """The stored INT8 codes ``(n, dim)`` and scales ``(n,)`` of these ids."""
        return self._index.get_codes(_as_ids(ids))

    def save(self, path: str | os.PathLike[str], *, key: Any = None) -> None:
        """Write the index to ``path`` atomically (a crash leaves the old file or the new
        one, never a mix). Removed rows are compacted away first. ``key`` (an
        ``_core.AeadKey``): the file is sealed with it, chunk by chunk."""
        self._index.save(os.fspath(path), key)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        mmap: bool = True,
        verify: bool = True,
        key: Any = None,
    ) -> Int8Index:
        """Open an index written by :meth:`save`.

        With ``mmap=True`` the codes are read in place from the page cache until the first
        change. ``verify`` checks the file's checksum (reading it whole); a damaged or
        truncated file raises :class:`~localmem.errors.CorruptFileError` either way. A file
        sealed with ``key`` is authenticated and decrypted into memory (never mapped).
        """
        return cls._wrap(_Int8Index.load(os.fspath(path), mmap, verify, key))


def quantize(
    vectors: npt.ArrayLike,
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric per-row INT8 quantization, as the index stores vectors.

    Returns ``(codes, scales)`` with ``codes`` in [-127, 127], ``scales = max|row| / 127``,
    and ``codes = rint(row / scale)`` (ties to even).
    """
    rows, single = _as_rows(vectors, "vectors")
    codes, scales = _core.quantize(rows)
    if single:
        return codes[0], scales
    return codes, scales
