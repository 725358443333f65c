"""Exact vector search: localmem's Int8Index against the libraries a user would pick instead.

Synthetic clustered data shaped like sentence embeddings (unit vectors, dim 384, 1,000
cluster centres, per-point spread; see ``localmem.testing.clustered_vectors``), queries drawn
from the same space, k = 10. Every method runs in the same process, on the same data, in the
same run; figures are medians over repeats because this machine is noisy.

    python bench/vector_search.py --check          # the issue's must-show, a few minutes
    python bench/vector_search.py                  # full table at 100k and 1M
    python bench/vector_search.py --sizes 100000 --skip sqlite-vec --json out.json

Peers (``pip install -e '.[bench]'``): numpy float32 (matmul + argpartition), faiss
IndexFlatIP and IndexScalarQuantizer(QT_8bit), usearch exact search on i8, sqlite-vec
``int8[384]`` KNN (through apsw: CPython's sqlite3 here cannot load extensions).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

import localmem
from localmem import Int8Index, _core
from localmem.testing import cluster_centres, clustered_vectors, exact_top_k, recall_at_k

DIM = 384
K = 10


@dataclass
class Row:
    method: str
    n: int
    build_s: float = float("nan")
    bytes_per_vector: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    qps: dict[int, float] = field(default_factory=dict)
    recall: float = float("nan")
    note: str = ""


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def latencies_ms(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> tuple[float, float]:
    fn(queries[0])  # warm-up
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        lat.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def blas_threads(n: int) -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # numpy then uses whatever BLAS threads it started with
        pass


def to_i8_unit(x: np.ndarray) -> np.ndarray:
    """The int8 form usearch and sqlite-vec take for unit vectors: round(x * 127)."""
    return np.clip(np.rint(x * 127), -127, 127).astype(np.int8)


# --- methods: each returns (build seconds, bytes/vector, search_batch, search_one) -----------


def m_localmem(x: np.ndarray):
    t0 = time.perf_counter()
    index = Int8Index(DIM)
    index.add(np.arange(len(x)), x)
    build = time.perf_counter() - t0

    def batch(q: np.ndarray, threads: int) -> np.ndarray:
        return index.search(q, K, threads=threads)[0]

    def one(q: np.ndarray) -> np.ndarray:
        return index.search(q, K, threads=1)[0]

    return build, index.nbytes / len(x), batch, one


def m_numpy(x: np.ndarray):
    def batch(q: np.ndarray, threads: int) -> np.ndarray:
        blas_threads(threads)
        return exact_top_k(q, x, K)

    def one(q: np.ndarray) -> np.ndarray:
        s = x @ q
        part = np.argpartition(-s, K)[:K]
        return part[np.argsort(-s[part])]

    return 0.0, 4.0 * DIM, batch, one


def m_faiss(x: np.ndarray, kind: str):
    import faiss

    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(DIM)
    else:
        index = faiss.IndexScalarQuantizer(
            DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.train(x)
    index.add(x)
    build = time.perf_counter() - t0
    code_size = 4 * DIM if kind == "flat" else index.code_size

    def batch(q: np.ndarray, threads: int) -> np.ndarray:
        faiss.omp_set_num_threads(threads)
        return index.search(q, K)[1]

    def one(q: np.ndarray) -> np.ndarray:
        faiss.omp_set_num_threads(1)
        return index.search(q[None, :], K)[1][0]

    return build, float(code_size), batch, one


def m_usearch(x: np.ndarray):
    from usearch.index import Index

    t0 = time.perf_counter()
    # metric "cos" gives usearch's i8 its best recall on unit vectors (0.97 vs 0.97- for "ip")
    index = Index(ndim=DIM, metric="cos", dtype="i8")
    index.add(np.arange(len(x)), x, threads=1)
    build = time.perf_counter() - t0

    def batch(q: np.ndarray, threads: int) -> np.ndarray:
        return index.search(q, K, exact=True, threads=threads).keys

    def one(q: np.ndarray) -> np.ndarray:
        return index.search(q, K, exact=True, threads=1).keys

    return build, index.memory_usage / len(x), batch, one


def m_sqlite_vec(x: np.ndarray):
    import apsw
    import sqlite_vec

    db = apsw.Connection(":memory:")
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    codes = to_i8_unit(x)
    t0 = time.perf_counter()
    db.execute(f"create virtual table v using vec0(embedding int8[{DIM}] distance_metric=cosine)")
    with db:
        db.executemany(
            "insert into v(rowid, embedding) values (?, vec_int8(?))",
            ((i, codes[i].tobytes()) for i in range(len(codes))),
        )
    build = time.perf_counter() - t0
    pages = (
        db.execute("pragma page_count").fetchone()[0] * db.execute("pragma page_size").fetchone()[0]
    )
    sql = "select rowid from v where embedding match vec_int8(?) and k = ?"

    def one(q: np.ndarray) -> np.ndarray:
        return np.array([r[0] for r in db.execute(sql, (to_i8_unit(q).tobytes(), K))])

    def batch(q: np.ndarray, threads: int) -> np.ndarray:
        return np.stack([one(v) for v in q])  # one connection: sqlite-vec has no batch search

    return build, pages / len(x), batch, one


METHODS: dict[str, Callable[[np.ndarray], tuple]] = {
    "localmem-int8": m_localmem,
    "numpy-f32": m_numpy,
    "faiss-flat": lambda x: m_faiss(x, "flat"),
    "faiss-sq8": lambda x: m_faiss(x, "sq8"),
    "usearch-i8": m_usearch,
    "sqlite-vec-int8": m_sqlite_vec,
}
SLOW = {"sqlite-vec-int8": 100}  # queries used for methods that scan from Python, one by one


def run_method(
    name: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, threads: list[int], repeats: int
) -> Row:
    row = Row(name, len(x))
    build, bpv, batch, one = METHODS[name](x)
    row.build_s, row.bytes_per_vector = build, bpv
    nq = SLOW.get(name, len(q))
    if nq < len(q):
        row.note = f"{nq} queries"
    qs = q[:nq]
    single = q[: min(200, nq)]
    row.p50_ms, row.p99_ms = latencies_ms(one, single)
    for t in threads:
        found = batch(qs, t)
        row.qps[t] = nq / median_time(lambda t=t: batch(qs, t), 1 if name in SLOW else repeats)
    row.recall = recall_at_k(np.asarray(found), truth[:nq])
    return row


def read_bandwidth(gib: float = 1.0) -> tuple[float, float]:
    """Single-thread read bandwidth over a buffer far larger than the caches, bytes/s:
    (native 8-way sum, numpy sum). Both are reported; targets use the larger."""
    buf = np.ones(int(gib * (1 << 30)), dtype=np.uint8)
    native = _core.measure_read_bandwidth(buf, 5)
    words = buf.view(np.uint64)
    blas_threads(1)
    t = min(median_time(lambda: words.sum(), 1) for _ in range(5))
    return native, buf.nbytes / t


def scan_rate(n: int, queries: int = 50) -> tuple[float, float]:
    """Bytes of codes per second read by one single-query scan on one thread at size n."""
    centres = cluster_centres(1000, DIM)
    x = clustered_vectors(n, DIM, centres=centres, seed=11)
    q = clustered_vectors(queries, DIM, centres=centres, seed=12)
    index = Int8Index(DIM)
    index.add(np.arange(n), x)
    del x
    p50_ms, _ = latencies_ms(lambda v: index.search(v, K, threads=1), q)
    return n * DIM / (p50_ms / 1000), p50_ms


def dataset(n: int, nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centres = cluster_centres(1000, DIM)
    x = clustered_vectors(n, DIM, centres=centres, seed=1)
    q = clustered_vectors(nq, DIM, centres=centres, seed=2)
    blas_threads(os.cpu_count() or 1)
    return x, q, exact_top_k(q, x, K)


def print_table(rows: list[Row], threads: list[int]) -> None:
    head = f"{'method':<16}{'n':>9}{'build s':>9}{'B/vec':>8}{'p50 ms':>9}{'p99 ms':>9}"
    head += "".join(f"{f'QPS {t}t':>10}" for t in threads) + f"{'recall':>8}  note"
    print(head)
    for r in rows:
        line = f"{r.method:<16}{r.n:>9,}{r.build_s:>9.2f}{r.bytes_per_vector:>8.0f}"
        line += f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
        line += "".join(f"{r.qps.get(t, float('nan')):>10.0f}" for t in threads)
        print(line + f"{r.recall:>8.3f}  {r.note}")
    ours = {r.n: r for r in rows if r.method == "localmem-int8"}
    for r in rows:
        if r.method != "localmem-int8" and r.n in ours:
            ratios = ", ".join(
                f"{t}t {ours[r.n].qps[t] / r.qps[t]:.1f}x" for t in threads if t in r.qps
            )
            print(f"  localmem / {r.method} QPS at {r.n:,}: {ratios}")


def check(args: argparse.Namespace) -> int:
    """The issue's must-show at 100k x 384 (batch, one thread) and 1M x 384 (one query)."""
    n, nq = 100_000, args.queries
    x, q, truth = dataset(n, nq)
    figures: list[tuple[str, float, str, bool]] = []

    index = Int8Index(DIM)
    index.add(np.arange(n), x, keep_fp32=True)
    t_ours = median_time(lambda ix=index: ix.search(q, K, threads=1), 5)
    recall = recall_at_k(index.search(q, K, threads=1)[0], truth)
    recall_rr = recall_at_k(index.search(q, K, threads=1, rerank=4)[0], truth)
    peers = {}
    for name in ("faiss-sq8", "usearch-i8"):
        _, _, batch, _ = METHODS[name](x)
        peers[name] = nq / median_time(lambda b=batch: b(q, 1), 5)
        peers[name + " recall"] = recall_at_k(np.asarray(batch(q, 1)), truth)
    ours = nq / t_ours
    print(
        f"100,000 x {DIM}, {nq} queries, k={K}, 1 thread, kernel {localmem.build_info()['kernel']}"
    )
    print(
        f"  localmem QPS {ours:,.0f}; faiss-sq8 {peers['faiss-sq8']:,.0f} (recall "
        f"{peers['faiss-sq8 recall']:.3f}); usearch-i8 {peers['usearch-i8']:,.0f} (recall "
        f"{peers['usearch-i8 recall']:.3f})"
    )
    for peer in ("faiss-sq8", "usearch-i8"):
        ratio = ours / peers[peer]
        figures.append((f"QPS localmem / {peer}", ratio, ">= 2.0", ratio >= 2.0))
    figures.append(("recall@10, codes alone", recall, ">= 0.98", recall >= 0.98))
    figures.append(("recall@10, fp32 re-rank x4", recall_rr, ">= 0.995", recall_rr >= 0.995))
    del x, index  # make room for the 1M scan

    native_bw, numpy_bw = read_bandwidth()
    bandwidth = max(native_bw, numpy_bw)
    rate, p50 = scan_rate(args.scan_size)
    print(
        f"{args.scan_size:,} x {DIM}, single query, 1 thread: p50 {p50:.2f} ms, scan "
        f"{rate / 1e9:.2f} GB/s; read bandwidth {bandwidth / 1e9:.2f} GB/s "
        f"(native {native_bw / 1e9:.2f}, numpy {numpy_bw / 1e9:.2f})"
    )
    share = rate / bandwidth
    figures.append(("1M scan / read bandwidth", share, ">= 0.60", share >= 0.60))

    print(f"\n{'figure':<30}{'measured':>10}  target")
    for name, value, target, ok in figures:
        print(f"{name:<30}{value:>10.3f}  {target:<9}{'ok' if ok else 'MISS'}")
    missed = [name for name, _, _, ok in figures if not ok]
    print("PASS" if not missed else "FAIL: " + ", ".join(missed))
    return 1 if missed else 0


def full(args: argparse.Namespace) -> int:
    threads = [int(t) for t in args.threads.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    rows: list[Row] = []
    for n in (int(s) for s in args.sizes.split(",")):
        x, q, truth = dataset(n, args.queries)
        for name in METHODS:
            if name in skip or (n > 200_000 and name in args.small_only.split(",")):
                continue
            print(f"... {name} at {n:,}", file=sys.stderr, flush=True)
            rows.append(run_method(name, x, q, truth, threads, args.repeats))
        del x
    print(f"kernel {localmem.build_info()['kernel']}, dim {DIM}, k {K}, {args.queries} queries")
    print_table(rows, threads)
    native_bw, numpy_bw = read_bandwidth()
    bandwidth = max(native_bw, numpy_bw)
    for r in rows:
        if r.method == "localmem-int8":
            rate = r.n * DIM / (r.p50_ms / 1000)
            print(
                f"  localmem single-query scan at {r.n:,}: {rate / 1e9:.2f} GB/s = "
                f"{rate / bandwidth:.0%} of single-thread read bandwidth {bandwidth / 1e9:.2f} GB/s"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--check", action="store_true", help="run the must-show figures and exit 1 on a miss"
    )
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", default="", help="comma-separated methods to leave out")
    p.add_argument(
        "--small-only",
        default="sqlite-vec-int8,usearch-i8",
        help="methods run only at sizes up to 200k (they take minutes at 1M)",
    )
    p.add_argument("--scan-size", type=int, default=1_000_000, help="--check: single-scan size")
    p.add_argument("--json", help="write the table as JSON")
    args = p.parse_args()
    return check(args) if args.check else full(args)


if __name__ == "__main__":
    sys.exit(main())
