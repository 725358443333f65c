"""Retrieval quality on LoCoMo (dev split), through the public ``Memory`` API.

Protocol (``../shared/data/README.md``): every turn is one memory (text "speaker: text",
event time = its session's date-time, session = "D3" for dia_id "D3:14", key = dia_id),
loaded with ``remember_many``; each question is asked once with ``recall`` against its own
conversation's store; recall@k = |evidence ∩ top-k| / |evidence| for k = 5, 10, 20,
averaged over the questions of categories 1-4 (and per category), with query latency
(query embedding included). BM25 alone (the catalog's FTS5) and vector alone (the INT8
index) run on the same stores in the same run.

    python bench/recall_quality.py --check       # the issue's must-show (a few minutes)
    python bench/recall_quality.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from _checks import print_checks  # bench/, on sys.path when a bench runs as a script
from _locomo import CATEGORY, DATA, evidence, turns

from localmem import Memory
from localmem.recall.retrieval import query_terms

KS = (5, 10, 20)
CATS = (1, 2, 3, 4)
NAMES = {c: CATEGORY[c] for c in CATS}


def score(found: list[str], ev: set[str]) -> dict[int, float]:
    return {k: len(ev & set(found[:k])) / len(ev) for k in KS}


def run(data: list[dict], root: Path) -> dict:
    methods = ("bm25", "vector", "localmem")
    per: dict[str, dict[int, list[dict[int, float]]]] = {m: defaultdict(list) for m in methods}
    lat: list[float] = []
    ingest = {"texts": 0, "seconds": 0.0}
    skipped = 0
    for s in data:
        ts = turns(s)
        now = max(t["when"] for t in ts)
        with Memory.open(root / s["sample_id"], sync="off") as mem:
            t0 = time.perf_counter()
            mem.remember_many(ts)
            ingest["seconds"] += time.perf_counter() - t0
            ingest["texts"] += len(ts)
            key_of = {m.id: m.key for m in mem.list(limit=100_000)}
            for qa in s["qa"]:
                cat = int(qa.get("category", 0))
                ev = evidence(qa)
                if cat not in CATS:
                    continue
                if not ev:
                    skipped += 1
                    continue
                q = qa["question"]
                t0 = time.perf_counter()
                hits = mem.recall(q, k=max(KS), now=now, floor=False)
                lat.append(time.perf_counter() - t0)
                per["localmem"][cat].append(score([h.memory.key for h in hits], ev))
                kw = mem.catalog.keyword(query_terms(q), max(KS))
                per["bm25"][cat].append(score([key_of[i] for i, _ in kw], ev))
                qv = mem.embedder.embed([q])[0]
                vec = mem.store.search(qv, max(KS))
                per["vector"][cat].append(score([key_of[i] for i, _ in vec], ev))
    res: dict = {"skipped_no_evidence": skipped, "ingest": ingest}
    for m in methods:
        allq = [r for c in CATS for r in per[m][c]]
        res[m] = {
            "overall": {k: float(np.mean([r[k] for r in allq])) for k in KS},
            "n": len(allq),
            **{f"cat{c}": {k: float(np.mean([r[k] for r in per[m][c]])) for k in KS} for c in CATS},
        }
    res["latency_ms"] = {
        "p50": 1e3 * statistics.median(lat),
        "p95": 1e3 * float(np.percentile(lat, 95)),
    }
    return res


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--check", action="store_true", help="print figures vs targets; exit 1 on a miss"
    )
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--json", help="write every figure as JSON")
    args = p.parse_args()
    data = json.loads(Path(args.data).read_text())
    with tempfile.TemporaryDirectory(prefix="recall-") as d:
        res = run(data, Path(d))
    n = res["localmem"]["n"]
    print(
        f"LoCoMo dev: {len(data)} conversations, {n} questions (categories 1-4), "
        f"{res['skipped_no_evidence']} skipped (no evidence)"
    )
    ing = res["ingest"]
    print(
        f"ingest: {ing['texts']} turns in {ing['seconds']:.1f} s "
        f"({ing['texts'] / ing['seconds']:.0f}/s, real embeddings)"
    )
    print(
        f"\n{'method':<10}{'':>6}"
        + "".join(f"{'R@' + str(k):>8}" for k in KS)
        + "".join(f"{'c' + str(c) + '@10':>9}" for c in CATS)
    )
    for m in ("bm25", "vector", "localmem"):
        r = res[m]
        print(
            f"{m:<10}{'':>6}"
            + "".join(f"{r['overall'][k]:>8.3f}" for k in KS)
            + "".join(f"{r[f'cat{c}'][10]:>9.3f}" for c in CATS)
        )
    lm, bm = res["localmem"], res["bm25"]
    print(
        f"\nlocalmem / bm25 @10: {lm['overall'][10] / bm['overall'][10]:.2f}x; "
        f"query latency p50 {res['latency_ms']['p50']:.1f} ms, "
        f"p95 {res['latency_ms']['p95']:.1f} ms (embedding included)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    checks = [
        ("recall@10, categories 1-4", lm["overall"][10], ">=", 0.76),
        *[
            (f"cat {c} ({NAMES[c]}) @10 - bm25", lm[f"cat{c}"][10] - bm[f"cat{c}"][10], ">=", 0.0)
            for c in CATS
        ],
        ("query p95 ms", res["latency_ms"]["p95"], "<=", 30.0),
    ]
    miss = print_checks(checks, 36)
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    sys.exit(main())
