"""The storage layer's self-check (``localmem doctor``): the SIMD kernels against scalar,
search recall against numpy, CRC32C, and a store torn like a crash tears it, reopened.
Also the synthetic vectors it (and the tests and benches) search."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from localmem import _core
from localmem.errors import CorruptFileError
from localmem.store.index import Int8Index
from localmem.store.store import Store

KERNEL_DIMS = (1, 3, 15, 16, 17, 97, 384, 768, 1023)


def clustered_vectors(
    n: int,
    dim: int,
    *,
    clusters: int = 1000,
    spread: float = 1.0,
    seed: int | np.random.Generator = 0,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """Unit vectors around gaussian cluster centres, shaped like sentence embeddings.

    Each point is ``centre + spread * s * noise`` with ``s`` drawn per point from
    [0.5, 1.5] (real embedding spaces mix tight and loose neighbourhoods), then normalized.
    Pass the same ``centres`` (shape ``(clusters, dim)``) to draw queries from the same
    space as the data.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if centres is None:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    pick = rng.integers(0, len(centres), n)
    s = spread * rng.uniform(0.5, 1.5, (n, 1)).astype(np.float32)
    x = centres[pick] + s * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def cluster_centres(clusters: int, dim: int, seed: int = 0) -> np.ndarray:
    """Centres to share between :func:`clustered_vectors` calls (data and queries)."""
    return np.random.default_rng(seed).standard_normal((clusters, dim)).astype(np.float32)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of |found ∩ truth| / |truth| (both shape (n, k))."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


def exact_top_k(queries: np.ndarray, data: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Float32 exact inner-product top-k ids (row numbers), best first."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), chunk):
        s = queries[i : i + chunk] @ data.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        out[i : i + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def kernels(rng: np.random.Generator) -> tuple[bool, str]:
    kernels = _core.available_kernels()
    for dim in KERNEL_DIMS:
        q = rng.integers(-127, 128, (5, dim), dtype=np.int8)
        d = rng.integers(-127, 128, (37, dim), dtype=np.int8)
        qs = rng.random(5, dtype=np.float32)
        ds = rng.random(37, dtype=np.float32)
        ref = _core.score_matrix(q, qs, d, ds, "scalar")
        for k in kernels:
            if not np.array_equal(_core.score_matrix(q, qs, d, ds, k), ref):
                return False, f"kernel {k} differs from scalar at dim {dim}"
    return True, f"{len(kernels)} kernels equal scalar on {len(KERNEL_DIMS)} dims"


def search(rng: np.random.Generator) -> tuple[bool, str]:
    n, dim, nq, k = 5000, 384, 100, 10
    centres = cluster_centres(64, dim)
    x = clustered_vectors(n, dim, centres=centres, seed=rng)
    q = clustered_vectors(nq, dim, centres=centres, seed=rng)
    index = Int8Index(dim)
    index.add(np.arange(n), x)
    ids, _ = index.search(q, k)
    recall = recall_at_k(ids, exact_top_k(q, x, k))
    ok = recall >= 0.95
    return ok, f"recall@10 = {recall:.3f} on {n:,} x {dim} against numpy float32"


def crc(rng: np.random.Generator) -> tuple[bool, str]:
    data = rng.integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    ok = _core.crc32c(data) == _core.crc32c(data, portable=True) and (
        _core.crc32c(b"123456789") == 0xE3069283
    )
    return ok, "hardware crc32c equals the table version and the standard check value"


def store(rng: np.random.Generator, disk: str | None = None) -> tuple[bool, str]:
    """Writes a small store (in ``disk``, a directory on the disk the user's store is on),
    tears its log like a crash would, reopens it, and times the disk's fdatasync (the floor
    under every durable commit)."""
    with tempfile.TemporaryDirectory(dir=disk) as tmp:
        path = Path(tmp) / "store"
        vecs = rng.standard_normal((200, 16)).astype(np.float32)
        with Store.open(path, dim=16) as s:
            for i in range(100):
                s.put(i, f"item {i}", vector=vecs[i])
            s.checkpoint()
            s.put_many([(i, f"item {i}", None, vecs[i]) for i in range(100, 200)])
            tail = Path(s.stats()["wal"]["tail_segment"])
        with tail.open("ab") as f:
            f.write(b"\x99" * 37)  # a torn record
        quiet = logging.getLogger("localmem.store")
        quiet.disabled = True  # the repair below is expected: no warning on the console
        try:
            s = Store.open(path)
        finally:
            quiet.disabled = False
        with s:
            intact = len(s) == 200 and s.get(150).text == "item 150"
            found = s.search(vecs[42], 1)[0][0] == 42
            repaired = [r["part"] for r in s.recovery] == ["wal"]
        probe = Path(tmp) / "fsync-probe"
        times = []
        with probe.open("wb") as f:
            for _ in range(20):
                f.write(b"x" * 1024)
                f.flush()
                t0 = time.perf_counter()
                os.fdatasync(f.fileno())
                times.append(time.perf_counter() - t0)
    ok = intact and found and repaired
    return ok, (
        f"log + arena + checkpoint + torn-tail repair {'ok' if ok else 'FAILED'}; "
        f"disk fdatasync p50 {np.median(times) * 1e6:.0f} us"
    )


def index_file(rng: np.random.Generator) -> tuple[bool, str]:
    x = clustered_vectors(1000, 64, clusters=16, seed=rng)
    index = Int8Index(64)
    index.add(np.arange(1000), x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.lmi"
        index.save(path)
        loaded = Int8Index.load(path)
        same = np.array_equal(index.search(x[:20], 5)[0], loaded.search(x[:20], 5)[0])
        del loaded
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            Int8Index.load(path)
            refused = False
        except CorruptFileError:
            refused = True
    return same and refused, "save/load round trip equal" + (
        ", damaged file refused" if refused else ", damaged file NOT detected"
    )
