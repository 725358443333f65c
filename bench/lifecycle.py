"""A year of use on a virtual clock, with forgetting and without, through the public API.

The stream (the same for both runs, seeded): every day a few turns of chit-chat (real LoCoMo
turns, never asked about again), now and then a fact about one of 40 people ("Anna's
favourite food is ramen"), some facts said again (duplicates) and some changed later
(contradictions), ten pinned notes. A fifth of the facts are asked about again at irregular
intervals (``recall(..., reinforce=True)``: the assistant used them). The forgetting run calls
``consolidate()`` once a simulated day (what the automatic upkeep does every few minutes of
a real day) and checkpoints weekly; the other run opens the store with ``forgetting=False``.

At the end (both compacted: ``Memory.compact()``): store bytes (arena + index + the catalog's
used pages + the log's records) per memory the store still holds (purged ones are gone),
per live memory (not forgotten) and per memory told; recall@10 on questions about the
reinforced facts (the current value's statement in the top 10); the share of never-touched
chit-chat demoted to cold or forgotten; mean retention of reinforced facts against
never-used memories; pinned memories lost. Store bytes and RSS are sampled monthly.

Vectors of the stream's texts are computed once with the real model and served by the same
model id (``PrecomputedEmbedder`` from bench/e2e.py); questions are embedded for real.

    python bench/lifecycle.py --check      # the issue's must-show (~2 minutes)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from localmem import Memory
from localmem import forgetting as lifecycle
from localmem.embed import OnnxEmbedder
from localmem.machine import rss_bytes

sys.path.insert(0, str(Path(__file__).parent))
from _checks import print_checks
from e2e import PrecomputedEmbedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev.json"
DAY = lifecycle.DAY
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()
NAMES = [
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kenji",
    "Lena",
    "Marco",
    "Nadia",
    "Omar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Will",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Amir",
    "Bella",
    "Carlos",
    "Dana",
    "Eli",
    "Fiona",
    "Gabe",
    "Hana",
    "Ivan",
    "Julia",
    "Karl",
    "Luca",
    "Maya",
    "Noor",
]
ATTRS = {
    "favourite food": "ramen tacos paella sushi lasagna curry pho risotto dumplings falafel",
    "job": "nurse teacher plumber architect chef pilot lawyer baker dentist journalist",
    "home town": "Lisbon Porto Oslo Lyon Krakow Seville Ghent Turin Bergen Malmo",
    "pet": "cat dog parrot rabbit tortoise hamster goldfish ferret gecko canary",
    "favourite band": "Radiohead Queen Abba Blur Oasis Muse Coldplay Pixies Gorillaz Portishead",
}
TEMPLATES = {
    "favourite food": ("{n}'s favourite food is {v}.", "What is {n}'s favourite food?"),
    "job": ("{n} works as a {v}.", "What does {n} do for a living?"),
    "home town": ("{n} grew up in {v}.", "Where did {n} grow up?"),
    "pet": ("{n} has a {v} as a pet.", "What pet does {n} have?"),
    "favourite band": ("{n}'s favourite band is {v}.", "Which band does {n} like best?"),
}
RESTATE = {
    "favourite food": "{n} said again that {v} is their favourite food.",
    "job": "{n} is still working as a {v}.",
    "home town": "{n} mentioned growing up in {v} again.",
    "pet": "{n} talked about their {v} again, their pet.",
    "favourite band": "{n} repeated that {v} is their favourite band.",
}


@dataclass
class Event:
    day: float
    kind: str  # chat | fact | pin | ask
    text: str = ""
    pair: tuple[str, str] | None = None
    value: str | None = None


@dataclass
class Stream:
    events: list[Event] = field(default_factory=list)
    asked: set[tuple[str, str]] = field(default_factory=set)


def chat_turns(n: int) -> list[str]:
    data = json.loads(DATA.read_text())
    out = []
    for s in data:
        conv = s["conversation"]
        for k, v in conv.items():
            if re.fullmatch(r"session_\d+", k) and isinstance(v, list):
                out += [f"{t['speaker']}: {t['text']}" for t in v]
    return list(dict.fromkeys(out))[:n]


def make_stream(days: int, seed: int) -> Stream:
    rng = random.Random(seed)
    st = Stream()
    turns = chat_turns(7 * days)
    for i, t in enumerate(turns):
        st.events.append(Event(i / 7, "chat", t))
    pairs = [(n, a) for n in NAMES for a in ATTRS]
    rng.shuffle(pairs)
    pairs = pairs[: int(0.55 * days)]
    asked = set(rng.sample(pairs, len(pairs) // 5))
    st.asked = asked
    for p in pairs:
        day = rng.uniform(0, days * 0.9)
        v = rng.choice(ATTRS[p[1]].split())
        st.events.append(Event(day, "fact", TEMPLATES[p[1]][0].format(n=p[0], v=v), p, v))
        r = rng.random()
        later = rng.uniform(day + 1, days)
        if r < 0.15:  # said again (a duplicate)
            st.events.append(Event(later, "fact", RESTATE[p[1]].format(n=p[0], v=v), p, v))
        elif r < 0.25:  # changed (a contradiction)
            v2 = rng.choice([x for x in ATTRS[p[1]].split() if x != v])
            st.events.append(Event(later, "fact", TEMPLATES[p[1]][0].format(n=p[0], v=v2), p, v2))
        if p in asked:
            t = day + rng.expovariate(1 / 20)
            while t < days:
                st.events.append(Event(t, "ask", TEMPLATES[p[1]][1].format(n=p[0]), p))
                t += rng.expovariate(1 / 20)
    for i in range(10):
        st.events.append(
            Event(rng.uniform(0, days / 2), "pin", f"Pinned note {i}: the code is {1000 + 37 * i}.")
        )
    st.events.sort(key=lambda e: e.day)
    return st


def store_parts(mem: Memory) -> dict[str, int]:
    """Arena, index, the catalog's used pages and the log's records (not its preallocation)."""
    root = mem.path
    parts = {
        sub: sum(f.stat().st_size for f in (root / sub).glob("*") if f.is_file())
        for sub in ("arena", "index")
    }
    db = mem.catalog._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    parts["catalog"] = (pages - free) * db.execute("PRAGMA page_size").fetchone()[0]
    parts["log"] = int(mem.store.stats()["wal"]["bytes"])
    return parts


def store_bytes(mem: Memory) -> int:
    return sum(store_parts(mem).values())


def rss_mb() -> float:
    return rss_bytes() / 2**20


def run(variant: str, days: int, seed: int, vectors: str, path: str) -> dict[str, Any]:
    st = make_stream(days, seed)
    cache = np.load(vectors)
    texts = json.loads(Path(vectors + ".json").read_text())
    emb = PrecomputedEmbedder(OnnxEmbedder(), {t: i for i, t in enumerate(texts)}, cache)
    clock = [T0]
    forgetting = variant == "forgetting"
    mem = Memory.open(path, embedder=emb, sync="off", clock=lambda: clock[0], forgetting=forgetting)
    mem.UPKEEP_INTERVAL = float("inf")  # upkeep runs once a simulated day, below
    ids: dict[tuple[str, str], list[tuple[int, str]]] = {}
    chat_ids, pinned_ids, fact_ids = [], [], []
    samples = []
    day_done = -1
    pending: list[Event] = []

    def flush() -> None:
        items = [
            {
                "text": e.text,
                "kind": "fact" if e.kind == "fact" else ("note" if e.kind == "pin" else "episodic"),
                "pinned": e.kind == "pin",
                "session": f"d{int(e.day)}",
            }
            for e in pending
        ]
        for e, m in zip(pending, mem.remember_many(items), strict=True):
            if e.kind == "chat":
                chat_ids.append(m.id)
            elif e.kind == "pin":
                pinned_ids.append(m.id)
            else:
                assert e.pair is not None and e.value is not None
                ids.setdefault(e.pair, []).append((m.id, e.value))
                fact_ids.append(m.id)
        pending.clear()

    for e in st.events:
        while int(e.day) > day_done:  # a new simulated day: yesterday's writes, then upkeep
            flush()
            day_done += 1
            clock[0] = T0 + day_done * DAY
            if forgetting:
                mem.consolidate(limit=100_000)
            if day_done % 7 == 0:
                mem.store.checkpoint()
            if day_done % 30 == 0:
                samples.append({"day": day_done, "bytes": store_bytes(mem), "rss_mb": rss_mb()})
        clock[0] = T0 + e.day * DAY
        if e.kind == "ask":
            flush()
            # The assistant puts the best few in the prompt and the answer uses the first:
            # that one is marked used (recall(..., reinforce=True) would mark all five).
            hits = mem.recall(e.text, k=5)
            if hits:
                mem.reinforce([hits[0].memory.id])
        else:
            pending.append(e)
    flush()
    clock[0] = T0 + days * DAY
    if forgetting:
        mem.consolidate(limit=100_000)
    mem.compact()
    end = clock[0]
    # The year's end state, before the questions below (recalls promote and reinforce).
    parts = store_parts(mem)
    b = sum(parts.values())
    held, live, by_tier = len(mem.store), len(mem), mem.stats()["by_tier"]
    # Recall on the reinforced facts: the statement of the current value in the top 10.
    hits = []
    for p in sorted(st.asked):
        stmts = ids.get(p, [])
        if not stmts:
            continue
        current = stmts[-1][1]
        good = {i for i, v in stmts if v == current}
        for i in list(good):  # a merged duplicate answers through its survivor
            m = mem.get(i) if _exists(mem, i) else None
            if m is not None and m.merged_into:
                good.add(m.merged_into)
        got = [
            h.memory.id for h in mem.recall(TEMPLATES[p[1]][1].format(n=p[0]), k=10, floor=False)
        ]
        hits.append(bool(good & set(got)))
        if not good & set(got):
            q = TEMPLATES[p[1]][1].format(n=p[0])
            stmts_now = [(mem.get(i).text, mem.get(i).tier) for i in good if _exists(mem, i)]
            print(f"missed: {q} {stmts_now}", file=sys.stderr)
            for i in good:
                sb = mem.get(i).superseded_by if _exists(mem, i) else None
                if sb:
                    print(f"   superseded by {sb}: {mem.get(sb).text!r}", file=sys.stderr)
            for h in mem.recall(q, k=12, floor=False):
                m = h.memory
                print(
                    f"   {h.score:.3f} R={h.retention:.2f} {m.tier} {m.text[:50]} {h.why}",
                    file=sys.stderr,
                )
    asked_ids = {i for p in st.asked for i, _ in ids.get(p, [])}
    never = [i for i in chat_ids] + [i for i in fact_ids if i not in asked_ids]
    tiers = {}
    for i in chat_ids:
        tiers[i] = mem.get(i).tier if _exists(mem, i) else "purged"
    demoted = sum(t in ("cold", "forgotten", "purged") for t in tiers.values()) / max(
        1, len(chat_ids)
    )
    ret = lambda i: mem.get(i).retention(end) if _exists(mem, i) else 0.0  # noqa: E731
    r_asked = np.mean([ret(i) for i in asked_ids]) if asked_ids else 0.0
    r_never = np.mean([ret(i) for i in never]) if never else 0.0
    pinned_lost = sum(not _exists(mem, i) or mem.get(i).tier != "hot" for i in pinned_ids)
    told = len(chat_ids) + len(fact_ids) + len(pinned_ids)
    out = {
        "variant": variant,
        "told": told,
        "held": held,
        "live": live,
        "bytes": b,
        "bytes_per_held": b / max(1, held),
        "bytes_per_live": b / max(1, live),
        "bytes_per_told": b / told,
        "recall10_reinforced": float(np.mean(hits)),
        "n_reinforced_questions": len(hits),
        "chat_demoted": demoted,
        "retention_reinforced": float(r_asked),
        "retention_never_used": float(r_never),
        "pinned_lost": pinned_lost,
        "by_tier": by_tier,
        "samples": samples,
        "rss_mb": rss_mb(),
        "parts": parts,
        "kind_tier": {
            f"{k}/{t}": n
            for k, t, n in mem.catalog._db.execute(
                "SELECT kind, tier, count(*) FROM memories GROUP BY kind, tier"
            )
        },
    }
    mem.close()
    return out


def _exists(mem: Memory, i: int) -> bool:
    try:
        mem.get(i)
        return True
    except KeyError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", default="/work/.benchtmp")
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        variant, vectors, path = args.child
        print(json.dumps(run(variant, args.days, args.seed, vectors, path)))
        return 0
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lifecycle-") as d:
        st = make_stream(args.days, args.seed)
        texts = list(dict.fromkeys(e.text for e in st.events if e.kind != "ask"))
        t = time.perf_counter()
        vecs = OnnxEmbedder().embed(texts)
        print(
            f"stream: {len(st.events)} events over {args.days} days ({len(texts)} texts embedded "
            f"in {time.perf_counter() - t:.1f} s)",
            file=sys.stderr,
        )
        np.save(f"{d}/vecs.npy", vecs)
        Path(f"{d}/vecs.npy.json").write_text(json.dumps(texts))
        res = {}
        for variant in ("forgetting", "keep-all"):
            t = time.perf_counter()
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--days",
                    str(args.days),
                    "--seed",
                    str(args.seed),
                    "--child",
                    variant,
                    f"{d}/vecs.npy",
                    f"{d}/{variant}",
                ],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{variant}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    f, k = res["forgetting"], res["keep-all"]
    print(
        f"a simulated year: {f['told']} memories told; forgetting keeps {f['held']} "
        f"({f['live']} not forgotten; by tier {f['by_tier']}), keep-all {k['held']}"
    )
    print(f"\n{'':28}{'forgetting':>12}{'keep-all':>12}")
    for key, fmt in (
        ("bytes", "{:,.0f}"),
        ("bytes_per_held", "{:,.0f}"),
        ("bytes_per_live", "{:,.0f}"),
        ("bytes_per_told", "{:,.0f}"),
        ("recall10_reinforced", "{:.3f}"),
        ("chat_demoted", "{:.3f}"),
        ("retention_reinforced", "{:.3f}"),
        ("retention_never_used", "{:.3f}"),
        ("rss_mb", "{:.0f}"),
    ):
        print(f"{key:28}{fmt.format(f[key]):>12}{fmt.format(k[key]):>12}")
    print(
        "keep-all / forgetting, bytes per memory: "
        + ", ".join(
            f"{w} {k['bytes_per_' + w] / f['bytes_per_' + w]:.2f}x"
            for w in ("held", "live", "told")
        )
    )
    print(f"parts (forgetting): {f['parts']}\nparts (keep-all):   {k['parts']}")
    print(f"kind/tier (forgetting): {f['kind_tier']}")
    print("\nmonthly store bytes (forgetting / keep-all):")
    for a, b in zip(f["samples"], k["samples"], strict=False):
        print(
            f"  day {a['day']:3d}: {a['bytes']:>10,} / {b['bytes']:>10,}   "
            f"RSS {a['rss_mb']:.0f} / {b['rss_mb']:.0f} MB"
        )
    ratio_r = f["retention_reinforced"] / max(f["retention_never_used"], 1e-9)
    checks = [
        (
            "bytes per held memory, keep-all / forgetting",
            k["bytes_per_held"] / f["bytes_per_held"],
            ">=",
            3.0,
        ),
        (
            "recall@10 reinforced, keep-all - forgetting",
            k["recall10_reinforced"] - f["recall10_reinforced"],
            "<=",
            0.02,
        ),
        ("never-touched chit-chat demoted", f["chat_demoted"], ">=", 0.90),
        ("pinned memories lost", f["pinned_lost"], "<=", 0),
        ("retention reinforced / never used", ratio_r, ">=", 1.0),
    ]
    miss = print_checks(checks, 48)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    sys.exit(main())
