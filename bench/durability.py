"""Durable writes: localmem's log against the disk's own fdatasync rate and against SQLite.

Every write is 1 KB and acknowledged once durable. In one run, on the same disk (temp dirs
under --dir, never tmpfs, where fsync is free): raw append + fdatasync; localmem's native
``Wal`` and ``Store.put`` under sync ``always`` and ``batch`` (group commit) with 1/4/16
threads sharing one object; SQLite in WAL mode, ``synchronous=FULL``/``NORMAL``, one
transaction per row, one connection per thread; bulk ingest (``put_many`` chunks under
``batch`` and ``off``, SQLite one transaction per chunk); two processes writing one store,
after which every acknowledged id must be present with its text and no process saw an error.
The store also runs encrypted at rest (every record sealed, issue 25) beside the plain one.
Timed cases repeat interleaved (repeat outer, case inner) so disk noise falls on every case
alike; figures are medians over repeats.

    python bench/durability.py --check     # the issue's must-show, ~2 minutes
    python bench/durability.py             # 5 s per case, ~5 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from localmem import Store, _core

SIZE = 1024
FILL = "localmem durability bench, one kilobyte of text per write. " * 20
TEXT = FILL[:SIZE]
PAYLOAD = TEXT.encode()
STRIDE = 10**9  # ids of writer thread t: t * STRIDE + i
WARMUP = 20
INSERT = "insert into t(id, text) values (?, ?)"
Op = Callable[[int], object]


def text_for(id: int) -> str:
    head = f"{id:020d} "
    return head + FILL[: SIZE - len(head)]


# --- write targets: op(t) gives thread t's write function, fsyncs() the log's count ----------


class Target:
    """One thing to write to, shared by every writer thread of a case."""

    def __init__(self, d: Path, threads: int, sync: str) -> None:
        self.d, self.threads, self.sync = d, threads, sync
        self.setup()

    def setup(self) -> None:
        pass

    def op(self, t: int) -> Op:
        raise NotImplementedError

    def fsyncs(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class RawFile(Target):
    def setup(self) -> None:
        self.fd = os.open(self.d / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def op(self, t: int) -> Op:
        fd = self.fd

        def write(i: int) -> None:
            os.write(fd, PAYLOAD)
            os.fdatasync(fd)

        return write

    def close(self) -> None:
        os.close(self.fd)


class LocalmemWal(Target):
    def setup(self) -> None:
        self.wal = _core.Wal(str(self.d / "wal"), sync=self.sync)
        self.wal.recover()

    def op(self, t: int) -> Op:
        wal = self.wal
        return lambda i: wal.commit(wal.append(64, PAYLOAD))

    def fsyncs(self) -> int | None:
        return int(self.wal.stats()["fsyncs"])


class LocalmemStore(Target):
    def setup(self) -> None:
        self.store = Store.open(self.d / "store", sync=self.sync)  # type: ignore[arg-type]

    def op(self, t: int) -> Op:
        put, base = self.store.put, t * STRIDE
        return lambda i: put(base + i, TEXT)

    def many(self) -> Callable[[list[tuple[int, str]]], object]:
        return self.store.put_many

    def fsyncs(self) -> int | None:
        return int(self.store.stats()["wal"]["fsyncs"])

    def close(self) -> None:
        self.store.close()


class LocalmemStoreEncrypted(LocalmemStore):
    """The same store encrypted at rest (issue 25): each record and blob sealed."""

    def setup(self) -> None:
        from localmem.store import keyfile
        from localmem.store.crypt import StoreKey

        path = self.d / "store"
        path.mkdir(mode=0o700)
        fast = {"time_cost": 1, "memory_kib": 8, "parallelism": 1}  # setup is not timed
        dek = keyfile.create(path, "bench", passphrase="bench", params=fast)
        self.store = Store.open(path, sync=self.sync, key=StoreKey(dek))  # type: ignore[arg-type]


def sqlite_connect(path: Path, sync: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=600, isolation_level=None, check_same_thread=False)
    db.execute("pragma journal_mode=wal")
    db.execute(f"pragma synchronous={sync}")
    db.execute("create table if not exists t (id integer primary key, text text)")
    return db


class Sqlite(Target):
    """One connection per writer thread (and one for the warm-up)."""

    def setup(self) -> None:
        self.conns: list[sqlite3.Connection] = []

    def op(self, t: int) -> Op:
        db, base = sqlite_connect(self.d / "rows.sqlite", self.sync), t * STRIDE
        self.conns.append(db)
        return lambda i: db.execute(INSERT, (base + i, TEXT))

    def many(self) -> Callable[[list[tuple[int, str]]], object]:
        db = sqlite_connect(self.d / "rows.sqlite", self.sync)
        self.conns.append(db)

        def transaction(rows: list[tuple[int, str]]) -> None:
            db.execute("begin")
            db.executemany(INSERT, rows)
            db.execute("commit")

        return transaction

    def close(self) -> None:
        for db in self.conns:
            db.close()


@dataclass
class Case:
    name: str
    threads: int
    kind: type[Target]
    sync: str


@dataclass
class Row:
    name: str
    threads: int
    ops_s: float
    p50_us: float
    p99_us: float
    fsyncs_per_commit: float


def run_threads(ops: list[Op], seconds: float) -> tuple[int, float, np.ndarray]:
    """Runs every op in its own thread until the deadline: (writes, elapsed s, latencies s)."""
    barrier = threading.Barrier(len(ops) + 1)
    lat: list[list[float]] = [[] for _ in ops]
    failures: list[BaseException] = []
    deadline = [0.0]

    def worker(op: Op, out: list[float]) -> None:
        clock, i = time.perf_counter, WARMUP
        barrier.wait()
        end = deadline[0]
        try:
            while (t0 := clock()) < end:
                op(i)
                out.append(clock() - t0)
                i += 1
        except BaseException as e:
            failures.append(e)

    pool = [threading.Thread(target=worker, args=a) for a in zip(ops, lat, strict=True)]
    for th in pool:
        th.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    barrier.wait()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return sum(map(len, lat)), elapsed, np.concatenate([np.asarray(x) for x in lat])


def measure(case: Case, root: Path, seconds: float) -> Row:
    d = Path(tempfile.mkdtemp(dir=root))
    target = case.kind(d, case.threads, case.sync)
    try:
        warm = target.op(case.threads)  # an id range of its own
        for i in range(WARMUP):
            warm(i)
        f0 = target.fsyncs()
        n, elapsed, lat = run_threads([target.op(t) for t in range(case.threads)], seconds)
        f1 = target.fsyncs()
    finally:
        target.close()
        shutil.rmtree(d)
    p50, p99 = np.percentile(lat, [50, 99])
    per = (f1 - f0) / n if f0 is not None and f1 is not None else float("nan")
    return Row(case.name, case.threads, n / elapsed, p50 * 1e6, p99 * 1e6, per)


def median_rows(runs: list[Row]) -> Row:
    med = {k: statistics.median(getattr(r, k) for r in runs) for k in asdict(runs[0])}
    med["name"], med["threads"] = runs[0].name, runs[0].threads
    return Row(**med)


def cases(threads: list[int]) -> list[Case]:
    out = [Case("raw fdatasync", 1, RawFile, ""), Case("wal always", 1, LocalmemWal, "always")]
    out.append(Case("store always", 1, LocalmemStore, "always"))
    out.append(Case("encrypted always", 1, LocalmemStoreEncrypted, "always"))
    for t in threads:
        out += [Case("wal batch", t, LocalmemWal, "batch")]
        out += [Case("store batch", t, LocalmemStore, "batch")]
        out += [Case("encrypted batch", t, LocalmemStoreEncrypted, "batch")]
    out += [Case("store always", t, LocalmemStore, "always") for t in threads[1:]]
    for sync in ("full", "normal"):
        out += [Case(f"sqlite wal {sync}", t, Sqlite, sync) for t in threads]
    return out


# --- bulk ingest -----------------------------------------------------------------------------


BULK: list[tuple[str, type[LocalmemStore | Sqlite], str]] = [
    ("store put_many", LocalmemStore, "batch"),
    ("store put_many", LocalmemStore, "off"),
    ("sqlite wal", Sqlite, "full"),
    ("sqlite wal", Sqlite, "normal"),
]


def bulk(root: Path, items: int, chunk: int, repeats: int) -> dict[str, float]:
    """Rows/s writing `items` rows in calls (localmem) or transactions (SQLite) of `chunk`."""
    rows = [(i, text_for(i)) for i in range(items)]
    chunks = [rows[i : i + chunk] for i in range(0, items, chunk)]
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, kind, sync in BULK:
            d = Path(tempfile.mkdtemp(dir=root))
            target = kind(d, 1, sync)
            write = target.many()
            t0 = time.perf_counter()
            for c in chunks:
                write(c)
            runs.setdefault(f"{name} {sync}", []).append(items / (time.perf_counter() - t0))
            target.close()
            shutil.rmtree(d)
    return {k: statistics.median(v) for k, v in runs.items()}


# --- two processes, one store ----------------------------------------------------------------


def child(path: str, proc: int, threads: int, seconds: float, start_at: float) -> int:
    """Hidden --child mode: writes distinct ids from `threads` threads until the deadline and
    prints {"acked": [count per thread], "errors": [...], ...} as JSON. Thread t of process p
    writes ids p*1000*STRIDE + t*STRIDE + 0, 1, 2, ... in order."""
    acked, errors = [0] * threads, []
    store = Store.open(path, sync="batch")  # if this fails, the parent counts the exit status
    base = proc * 1000 * STRIDE

    def worker(t: int) -> None:
        while time.time() < start_at:
            time.sleep(0.001)
        end, first = start_at + seconds, base + t * STRIDE
        try:
            while time.time() < end:
                store.put(first + acked[t], text_for(first + acked[t]))
                acked[t] += 1
        except Exception as e:
            errors.append(repr(e))

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    fsyncs = None
    try:
        fsyncs = int(store.stats()["wal"]["fsyncs"])
        store.close()
    except Exception as e:
        errors.append(f"after the run: {e!r}")
    report = {"acked": acked, "errors": errors, "fsyncs": fsyncs, "repairs": store.recovery}
    print(json.dumps(report, default=str))
    return 0


@dataclass
class TwoProcs:
    writes: list[int]
    errors: list[int]
    repairs: list[int]  # torn-tail repairs each process made while both were alive
    fsyncs: list[int | None]  # None: the process could not read its stats
    missing: int
    wrong_text: int
    extra: int
    messages: list[str]
    kept: str = ""  # the store, left on disk when something was lost


def two_processes(root: Path, keep: Path, threads: int, seconds: float) -> TwoProcs:
    d = Path(tempfile.mkdtemp(dir=root))
    path = d / "store"
    Store.open(path, sync="batch").close()  # create it once, so neither child races to
    start_at = time.time() + 3.0  # both children import, open, then start together
    cmd = [sys.executable, __file__, "--mp-threads", str(threads), "--mp-seconds", str(seconds)]
    procs = [
        subprocess.Popen(
            [*cmd, "--child", str(path), str(p), str(start_at)], stdout=subprocess.PIPE, text=True
        )
        for p in range(2)
    ]
    reports = []
    for p in procs:
        out, _ = p.communicate()
        try:
            rep = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            rep = {"acked": [], "errors": [f"no report: {out!r}"], "fsyncs": None, "repairs": []}
        if p.returncode:
            rep["errors"].append(f"exit status {p.returncode}")
        reports.append(rep)
    messages = [f"process {i}: {e}" for i, r in enumerate(reports) for e in r["errors"]]
    messages += [f"process {i} repaired {x}" for i, r in enumerate(reports) for x in r["repairs"]]
    writes = [sum(r["acked"]) for r in reports]
    missing = wrong = extra = 0
    try:
        with Store.open(path) as store:
            acked = set()
            for proc, rep in enumerate(reports):
                for t, n in enumerate(rep["acked"]):
                    first = proc * 1000 * STRIDE + t * STRIDE
                    for id in range(first, first + n):
                        acked.add(id)
                        try:
                            wrong += store.get(id).text != text_for(id)
                        except KeyError:
                            missing += 1
            extra = len(set(store.ids()) - acked)
            messages += [f"reopen repaired {x}" for x in store.recovery]
    except Exception as e:  # a store that cannot be reopened has lost every write it took
        missing = sum(writes)
        messages.append(f"reopen failed: {e!r}")
    result = TwoProcs(
        writes,
        [len(r["errors"]) for r in reports],
        [len(r["repairs"]) for r in reports],
        [r["fsyncs"] for r in reports],
        missing,
        wrong,
        extra,
        messages,
    )
    if missing or wrong:
        result.kept = str(shutil.move(str(d), tempfile.mkdtemp(dir=keep, prefix="lost-")))
    else:
        shutil.rmtree(d)
    return result


# --- report ----------------------------------------------------------------------------------


def print_rows(rows: list[Row]) -> None:
    raw = next(r for r in rows if r.name == "raw fdatasync")
    full = {r.threads: r.ops_s for r in rows if r.name == "sqlite wal full"}
    print(
        f"{'case':<18}{'thr':>4}{'commits/s':>11}{'p50 us':>9}{'p99 us':>9}"
        f"{'fsync/commit':>14}{'vs raw':>8}{'vs sqlite FULL':>16}"
    )
    for r in rows:
        vs_full = f"{r.ops_s / full[r.threads]:.2f}x" if r.threads in full else ""
        fs = "" if np.isnan(r.fsyncs_per_commit) else f"{r.fsyncs_per_commit:.3f}"
        print(
            f"{r.name:<18}{r.threads:>4}{r.ops_s:>11,.0f}{r.p50_us:>9.0f}{r.p99_us:>9.0f}"
            f"{fs:>14}{r.ops_s / raw.ops_s:>7.2f}x{vs_full:>16}"
        )
    print(
        f"  raw 1 KB append + fdatasync: p50 {raw.p50_us:.0f} us -> 1/p50 "
        f"{1e6 / raw.p50_us:,.0f}/s; measured {raw.ops_s:,.0f}/s"
    )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--check", action="store_true", help="short runs; exit 1 on a miss")
    p.add_argument("--dir", default="/work/.benchtmp", help="temp dirs go here (not tmpfs)")
    p.add_argument("--seconds", type=float, help="per timed case (default 2 --check, else 5)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="1,4,16")
    p.add_argument("--bulk-items", type=int, default=20_000)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--mp-threads", type=int, default=4)
    p.add_argument("--mp-seconds", type=float, default=10.0)
    p.add_argument("--json", help="write every figure as JSON")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        path, proc, start_at = args.child
        return child(path, int(proc), args.mp_threads, args.mp_seconds, float(start_at))

    seconds = args.seconds or (2.0 if args.check else 5.0)
    threads = [int(t) for t in args.threads.split(",")]
    os.makedirs(args.dir, exist_ok=True)
    fstype = filesystem(args.dir)
    if fstype in ("tmpfs", "ramfs"):
        sys.exit(f"{args.dir} is on {fstype}, where fsync is free; pass --dir on a real disk")
    root = Path(tempfile.mkdtemp(dir=args.dir, prefix="durability-"))
    try:
        runs: dict[tuple[str, int], list[Row]] = {}
        todo = cases(threads)
        for rep in range(args.repeats):
            for c in todo:
                print(f"... {c.name} {c.threads}t, repeat {rep + 1}", file=sys.stderr, flush=True)
                runs.setdefault((c.name, c.threads), []).append(measure(c, root, seconds))
        rows = [median_rows(v) for v in runs.values()]
        print("... bulk ingest", file=sys.stderr, flush=True)
        ingest = bulk(root, args.bulk_items, args.chunk, args.repeats)
        print("... two processes", file=sys.stderr, flush=True)
        mp = two_processes(root, Path(args.dir), args.mp_threads, args.mp_seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"1 KB writes, {fstype} at {args.dir}, {seconds:g} s per case, median of "
        f"{args.repeats}, {os.cpu_count()} cores"
    )
    print_rows(rows)
    print(f"\nbulk ingest, {args.bulk_items:,} x 1 KB, {args.chunk} per call/transaction")
    for name, rate in ingest.items():
        print(f"  {name:<24}{rate:>10,.0f} rows/s")
    log_cost = ingest["store put_many off"] / ingest["store put_many batch"]
    vs_sqlite = ingest["store put_many batch"] / ingest["sqlite wal full"]
    print(f"  off / batch {log_cost:.2f}x; put_many batch / sqlite FULL {vs_sqlite:.2f}x")
    print(f"\ntwo processes x {args.mp_threads} threads, {args.mp_seconds:g} s, one store, batch")
    for i, w in enumerate(mp.writes):
        fsyncs = "?" if mp.fsyncs[i] is None else f"{mp.fsyncs[i]:,}"
        print(
            f"  process {i}: {w:,} acknowledged writes, {fsyncs} fsyncs, "
            f"errors: {mp.errors[i]}, repairs: {mp.repairs[i]}"
        )
    print(
        f"  reopened: missing: {mp.missing}, wrong text: {mp.wrong_text}, "
        f"unacknowledged extra: {mp.extra}"
    )
    for m in mp.messages[:8]:
        print(f"  ! {m[:300]}")
    if mp.kept:
        print(f"  the store is kept for inspection at {mp.kept}")

    by = {(r.name, r.threads): r for r in rows}
    top = max(threads)
    group = by[("store batch", top)].ops_s / by[("sqlite wal full", top)].ops_s
    raw_ratio = by[("raw fdatasync", 1)].ops_s / by[("store always", 1)].ops_s
    errors, writes, lost = sum(mp.errors), min(mp.writes), mp.missing + mp.wrong_text
    enc = {t: by[("encrypted batch", t)].ops_s / by[("store batch", t)].ops_s for t in threads}
    print("\nencrypted / plain group commit: " + ", ".join(
        f"{t}t {v:.2f}x" for t, v in enc.items()))  # fmt: skip
    figures = [
        (f"batch {top}t / sqlite FULL {top}t", group, ">= 5.0", group >= 5.0),
        (f"encrypted / plain batch {top}t", enc[top], ">= 0.85", enc[top] >= 0.85),
        ("raw fdatasync / always 1t", raw_ratio, "<= 1.2", raw_ratio <= 1.2),
        ("2 procs: missing/wrong acked", lost, "== 0", lost == 0),
        ("2 procs: errors", errors, "== 0", errors == 0),
        ("2 procs: min writes/proc", writes, "> 0", writes > 0),
    ]
    print(f"\n{'figure':<34}{'measured':>10}  target")
    for name, value, target, ok in figures:
        shown = f"{value:.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"{name:<34}{shown:>10}  {target:<9}{'ok' if ok else 'MISS'}")
    missed = [name for name, _, _, ok in figures if not ok]
    print("PASS" if not missed else "FAIL: " + ", ".join(missed))
    if args.json:
        with open(args.json, "w") as out:
            doc = {"rows": [asdict(r) for r in rows], "bulk": ingest, "two": asdict(mp)}
            json.dump(doc, out, indent=1)
    return 1 if missed and args.check else 0


def filesystem(path: str) -> str:
    """The type of the filesystem holding path ("ext2/ext3", "tmpfs", ...)."""
    out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
