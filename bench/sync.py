"""Sync's cost (issue 26): importing another device's records against writing the same
memories locally, and what the folder holds against the records it carries.

In one run, for N memories (text ~90 characters, a 384-dimension vector each), repeated
(interleaved, medians reported):

- ``remember_many``: the memories written into a fresh store with their vectors given (an
  embedder that looks the precomputed vector up: no embedding time, the store and catalog
  only) — the yardstick the issue names;
- ``import``: a fresh device joins the folder device A exported the same memories to, and
  imports them (decrypt, decode, merge, write, catalog) — vectors travel, nothing is
  embedded;
- SQLite, for scale: the same rows (id, text, vector blob) inserted in one transaction —
  what a store with no log, no index, no full-text search and no merge would pay.

The folder's bytes are set against the bytes of the log records the memories took on
device A: each PUT record as the log frames it (text, metadata, fp32 vector, its header,
and the log's own 24-byte record header) — the bytes sync ships.

    python bench/sync.py --check      # 100,000 memories, 3 repeats: a few minutes
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _checks import print_checks

from localmem import Memory
from localmem.store import records as rec

WAL_RECORD_HEADER = 24  # kWalRecordHeader, csrc/core/storage/wal.h
WORDS = [
    "apple",
    "river",
    "doctor",
    "piano",
    "garden",
    "winter",
    "pottery",
    "marathon",
    "telescope",
    "mortgage",
    "spinach",
    "glacier",
    "festival",
    "camera",
    "ferry",
    "thesis",
    "lisbon",
    "porto",
    "sister",
    "meeting",
    "dentist",
]


class LookupEmbedder:
    """Returns each text's precomputed vector: writing without embedding."""

    dim = 384
    model_id = "bench-lookup-384"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed(self, texts: list[str], progress: Any = None) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def _bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def _record_bytes(m: Memory) -> int:
    """The bytes of the PUT records that hold ``m``'s memories, as its log frames them."""
    total = 0
    for id in m.store.ids():
        it = m.store.get(id)
        payload = rec.encode_put(id, it.text, it.meta, it.vector, m.store.dim)
        total += len(payload) + WAL_RECORD_HEADER
    return total


def one(root: Path, items: list[dict[str, Any]], emb: LookupEmbedder) -> dict[str, float]:
    out: dict[str, float] = {}
    with Memory.open(root / "plain", embedder=emb, forgetting=False) as m:
        t = time.perf_counter()
        m.remember_many(items)
        out["remember_s"] = time.perf_counter() - t
    with Memory.open(root / "a", embedder=emb, forgetting=False) as a:
        a.remember_many(items)
        out["record_bytes"] = _record_bytes(a)
        t = time.perf_counter()
        code = a.sync_init(root / "folder")
        out["export_s"] = time.perf_counter() - t
    out["folder_bytes"] = _bytes(root / "folder")
    with Memory.open(root / "b", embedder=emb, forgetting=False) as b:
        t = time.perf_counter()
        got = b.sync_join(root / "folder", code)
        out["import_s"] = time.perf_counter() - t
        assert got["imported"] == len(items) and got["embedded"] == 0, got
        assert len(b) == len(items)
    db = sqlite3.connect(root / "peer.sqlite")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t(id integer primary key, text text, vec blob)")
    t = time.perf_counter()
    with db:
        db.executemany("insert into t values (?, ?, ?)",
                       ((i, it["text"], emb.table[it["text"]].tobytes())
                        for i, it in enumerate(items)))  # fmt: skip
    out["sqlite_s"] = time.perf_counter() - t
    db.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="the issue's must-show; exit 1 on a miss")
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    args = ap.parse_args()
    rng = random.Random(26)
    vrng = np.random.default_rng(26)
    texts = [f"{i} " + " ".join(rng.choices(WORDS, k=12)) for i in range(args.n)]
    vecs = vrng.standard_normal((args.n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    emb = LookupEmbedder(dict(zip(texts, vecs, strict=True)))
    items = [{"text": t, "tags": [rng.choice(WORDS)]} for t in texts]
    runs = []
    for r in range(args.repeat):
        root = Path(tempfile.mkdtemp(prefix="lm-sync-", dir=args.dir))
        try:
            runs.append(one(root, items, emb))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        x = runs[-1]
        print(f"run {r + 1}: remember_many {x['remember_s']:.2f} s, import {x['import_s']:.2f} s,"
              f" export {x['export_s']:.2f} s, sqlite {x['sqlite_s']:.2f} s; folder "
              f"{x['folder_bytes'] / 2**20:.1f} MiB for {x['record_bytes'] / 2**20:.1f} MiB of "
              "records", flush=True)  # fmt: skip
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    n = args.n
    print(f"\n{n:,} memories, medians of {args.repeat}:")
    shown = (("remember_many, no embedding", "remember_s"), ("sync import", "import_s"),
             ("sync export", "export_s"), ("SQLite insert (peer)", "sqlite_s"))  # fmt: skip
    for name, key in shown:
        print(f"  {name:<30}{med[key]:>8.2f} s  {n / med[key]:>10,.0f} memories/s")
    ratio = statistics.median(r["import_s"] / r["remember_s"] for r in runs)
    growth = statistics.median(r["folder_bytes"] / r["record_bytes"] for r in runs)
    print(
        f"  import / remember_many: {ratio:.2f}x; import / SQLite insert: "
        f"{med['import_s'] / med['sqlite_s']:.1f}x"
    )
    print(
        f"  folder {med['folder_bytes'] / n:.0f} B per memory, log records "
        f"{med['record_bytes'] / n:.0f} B per memory"
    )
    miss = print_checks(
        [
            ("import time / remember_many time", ratio, "<=", 2.0),
            ("folder bytes / record bytes", growth, "<=", 1.3),
            ("memories imported per second", n / med["import_s"], "", None),
        ],
        36,
    )
    return 1 if miss and args.check else 0


if __name__ == "__main__":
    os.environ.setdefault("LOCALMEM_CACHE", tempfile.mkdtemp(prefix="lm-cache-"))
    sys.exit(main())
