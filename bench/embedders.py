"""Embedding models side by side, so the default can be chosen again later (issue 27).

Every registry embedding model that is installed runs on the same data in one run:

1. LoCoMo dev (``../shared/data/README.md``): each conversation's turns embedded as stored
   texts, each question as a query; recall@10 of the vector alone (exact cosine), per
   category; then the same vectors through ``Memory.recall``: the fused channels (the fair
   comparison), and with the shipped re-ranker ("ranked": fitted on these very questions
   with MiniLM's features, so in-sample for MiniLM; held-out figures are
   bench/recall_quality.py's).
2. Speed on this machine: one query's embedding time (p50 / p95 of 200), ingest texts/s
   (the embedder alone on 1,000 LoCoMo turns, median of 2), model bytes on disk and store
   bytes per memory (the vector's INT8 code + fp32 copy are the same at 384 dimensions).
3. Other languages: 16 facts stated in English and asked in Spanish, French and German,
   and stated in Spanish and asked in English, among 300 LoCoMo turns; recall@3 of the
   vector alone.

The rule (issue 27): another model becomes the default only if it beats the default's
recall@10 (fused) by >= 0.02 at <= 2x its query time. ``--check`` fails if the rule says the
default should change.

    python bench/embedders.py --check
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
from typing import Any

import numpy as np
from _checks import print_checks
from _locomo import DATA, evidence, turns

from localmem import Memory, registry
from localmem.embed import embed_queries, open_embedder
from localmem.errors import LocalmemError

CATS = (1, 2, 3, 4)
FACTS = [  # (English, Spanish, question in es, fr, de, question in English)
    ("My sister Ana lives in Lisbon.", "Mi hermana Ana vive en Lisboa.",
     "¿Dónde vive mi hermana Ana?", "Où habite ma sœur Ana ?", "Wo wohnt meine Schwester Ana?",
     "Where does my sister Ana live?"),
    ("I am allergic to peanuts.", "Soy alérgico a los cacahuetes.",
     "¿A qué soy alérgico?", "À quoi suis-je allergique ?", "Wogegen bin ich allergisch?",
     "What am I allergic to?"),
    ("My dog is called Rex.", "Mi perro se llama Rex.",
     "¿Cómo se llama mi perro?", "Comment s'appelle mon chien ?", "Wie heißt mein Hund?",
     "What is my dog's name?"),
    ("My birthday is on the 14th of July.", "Mi cumpleaños es el 14 de julio.",
     "¿Cuándo es mi cumpleaños?", "Quand est mon anniversaire ?", "Wann habe ich Geburtstag?",
     "When is my birthday?"),
    ("I work as a nurse at the city hospital.", "Trabajo de enfermera en el hospital de la ciudad.",
     "¿En qué trabajo?", "Quel est mon métier ?", "Was ist mein Beruf?", "What is my job?"),
    ("My favourite food is ramen.", "Mi comida favorita es el ramen.",
     "¿Cuál es mi comida favorita?", "Quel est mon plat préféré ?", "Was ist mein Lieblingsessen?",
     "What is my favourite food?"),
    ("I drive a red Toyota.", "Conduzco un Toyota rojo.",
     "¿Qué coche conduzco?", "Quelle voiture est-ce que je conduis ?", "Welches Auto fahre ich?",
     "What car do I drive?"),
    ("I play the violin in a small orchestra.", "Toco el violín en una pequeña orquesta.",
     "¿Qué instrumento toco?", "De quel instrument est-ce que je joue ?",
     "Welches Instrument spiele ich?", "What instrument do I play?"),
    ("My daughter goes to school in Porto.", "Mi hija va al colegio en Oporto.",
     "¿Dónde va al colegio mi hija?", "Où ma fille va-t-elle à l'école ?",
     "Wo geht meine Tochter zur Schule?", "Where does my daughter go to school?"),
    ("I am learning to speak Japanese.", "Estoy aprendiendo a hablar japonés.",
     "¿Qué idioma estoy aprendiendo?", "Quelle langue est-ce que j'apprends ?",
     "Welche Sprache lerne ich?", "What language am I learning?"),
    ("My doctor told me to drink less coffee.", "Mi médico me dijo que bebiera menos café.",
     "¿Qué me dijo el médico?", "Qu'est-ce que le médecin m'a dit ?",
     "Was hat mir der Arzt gesagt?", "What did my doctor tell me?"),
    ("We are going to Iceland for our holidays in March.",
     "Vamos a Islandia de vacaciones en marzo.", "¿Adónde vamos de vacaciones?",
     "Où partons-nous en vacances ?", "Wohin fahren wir in den Urlaub?",
     "Where are we going on holiday?"),
    ("My password manager is Bitwarden.", "Mi gestor de contraseñas es Bitwarden.",
     "¿Qué gestor de contraseñas uso?",
     "Quel gestionnaire de mots de passe est-ce que j'utilise ?",
     "Welchen Passwort-Manager benutze ich?", "Which password manager do I use?"),
    ("I run five kilometres every morning.", "Corro cinco kilómetros cada mañana.",
     "¿Cuánto corro cada mañana?", "Combien est-ce que je cours chaque matin ?",
     "Wie weit laufe ich jeden Morgen?", "How far do I run every morning?"),
    ("My grandmother was born in Kraków.", "Mi abuela nació en Cracovia.",
     "¿Dónde nació mi abuela?", "Où est née ma grand-mère ?", "Wo wurde meine Großmutter geboren?",
     "Where was my grandmother born?"),
    ("I keep my spare key under the blue flowerpot.",
     "Guardo la llave de repuesto debajo de la maceta azul.",
     "¿Dónde guardo la llave de repuesto?", "Où est-ce que je garde la clé de secours ?",
     "Wo bewahre ich den Ersatzschlüssel auf?", "Where do I keep my spare key?"),
]  # fmt: skip
DIRECTIONS = {"en->es": (0, 2), "en->fr": (0, 3), "en->de": (0, 4), "es->en": (1, 5)}


class Served:
    """The model's own vectors, computed once in a batch, served to ``Memory`` by text."""

    def __init__(self, emb: Any, texts: list[str]) -> None:
        self.inner = emb
        self.model_id, self.dim = emb.model_id, emb.dim
        self.vecs = dict(zip(texts, emb.embed(texts), strict=True))

    def embed(self, texts: list[str], *, progress: Any = None) -> np.ndarray:
        miss = [t for t in texts if t not in self.vecs]
        if miss:
            self.vecs.update(zip(miss, self.inner.embed(miss), strict=True))
        return np.stack([self.vecs[t] for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return embed_queries(self.inner, texts)


def r_at(found: list[str], ev: set[str], k: int = 10) -> float:
    return len(ev & set(found[:k])) / len(ev)


def locomo(name: str, emb: Any, data: list[dict], root: Path) -> dict[str, Any]:
    methods = ("vector", "fused", "ranked")
    per: dict[str, dict[int, list[float]]] = {m: defaultdict(list) for m in methods}
    for s in data:
        ts = turns(s)
        keys = [t["key"] for t in ts]
        served = Served(emb, [t["text"] for t in ts])
        qs = [(qa["question"], int(qa["category"]), evidence(qa)) for qa in s["qa"]
              if int(qa.get("category", 0)) in CATS and evidence(qa)]  # fmt: skip
        qv = embed_queries(emb, [q for q, _, _ in qs])
        mat = np.stack([served.vecs[t["text"]] for t in ts])
        now = max(t["when"] for t in ts)
        with Memory.open(root / f"{name}-{s['sample_id']}", embedder=served, sync="off",
                         ranker="off", forgetting=False) as mem:  # fmt: skip
            mem.remember_many(ts)
            shipped = Memory.open(mem.path, embedder=served, sync="off", forgetting=False)
            try:
                for (q, cat, ev), v in zip(qs, qv, strict=True):
                    top = np.argsort(-(mat @ v))[:10]
                    per["vector"][cat].append(r_at([keys[i] for i in top], ev))
                    hits = mem.recall(q, k=10, now=now, floor=False)
                    per["fused"][cat].append(r_at([h.memory.key or "" for h in hits], ev))
                    hits = shipped.recall(q, k=10, now=now, floor=False)
                    per["ranked"][cat].append(r_at([h.memory.key or "" for h in hits], ev))
            finally:
                shipped.close()
    out: dict[str, Any] = {}
    for m, by in per.items():
        out[m] = float(np.mean([r for c in CATS for r in by[c]]))
        out[m + "_cats"] = {c: float(np.mean(by[c])) for c in CATS}
    return out


def speed(emb: Any, data: list[dict]) -> dict[str, float]:
    texts = [t["text"] for s in data for t in turns(s)][:1000]
    qs = [qa["question"] for qa in data[0]["qa"]][:200]
    embed_queries(emb, qs[:5])
    lat = []
    for q in qs:
        t0 = time.perf_counter()
        embed_queries(emb, [q])
        lat.append(time.perf_counter() - t0)
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        emb.embed(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return {
        "query_p50_ms": 1e3 * statistics.median(lat),
        "query_p95_ms": 1e3 * float(np.percentile(lat, 95)),
        "ingest_per_s": statistics.median(rates),
    }


def languages(emb: Any, data: list[dict]) -> dict[str, float]:
    noise = emb.embed([t["text"] for t in turns(data[1])][:300])
    out = {}
    for d, (fact_col, q_col) in DIRECTIONS.items():
        store = np.concatenate([emb.embed([f[fact_col] for f in FACTS]), noise])
        qv = embed_queries(emb, [f[q_col] for f in FACTS])
        hits = [i in np.argsort(-(store @ v))[:3] for i, v in enumerate(qv)]
        out[d] = float(np.mean(hits))
    out["all"] = float(np.mean(list(out.values())))
    return out


def model_bytes(name: str) -> int:
    e = registry.entry(name)
    return int(e["model"]["size"]) + int(e.get("tokenizer", {}).get("size", 0))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--check", action="store_true", help="exit 1 if the default should change")
    p.add_argument("--json", help="write every figure as JSON")
    args = p.parse_args()
    data = json.loads(DATA.read_text())
    default = registry.default_name("embedding")
    names = [n for n, e in registry.registry()["models"].items() if e.get("kind") == "embedding"]
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="embedders-") as d:
        for name in names:
            emb = open_embedder(name)
            try:
                emb.embed(["probe"])
            except LocalmemError as e:
                print(f"{name}: not run ({e})")
                continue
            print(f"{name}: running", flush=True)
            res[name] = {**speed(emb, data), **locomo(name, emb, data, Path(d))}
            res[name]["languages"] = languages(emb, data)
            res[name]["model_bytes"] = model_bytes(name)
    print(
        f"\n{'model':<28}{'vec@10':>7}{'fused':>7}{'ranked*':>8}"
        + "".join(f"{'c' + str(c):>6}" for c in CATS)
        + f"{'q p50':>7}{'q p95':>7}{'ingest/s':>9}{'MB':>6}{'langs@3':>8}"
    )
    for name, r in res.items():
        print(
            f"{name:<28}{r['vector']:>7.3f}{r['fused']:>7.3f}{r['ranked']:>8.3f}"
            + "".join(f"{r['fused_cats'][c]:>6.3f}" for c in CATS)
            + f"{r['query_p50_ms']:>7.1f}{r['query_p95_ms']:>7.1f}{r['ingest_per_s']:>9.0f}"
            + f"{r['model_bytes'] / 1e6:>6.0f}{r['languages']['all']:>8.3f}"
        )
        print(f"{'':<28}other languages @3: " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["languages"].items() if k != "all"))  # fmt: skip
    print("(c1-c4: fused recall@10 by category; ranked*: in-sample for the default, see above)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    base = res[default]
    checks: list[tuple[str, float, str, float | None]] = [
        (f"{default} recall@10 (fused)", base["fused"], ">=", None),
    ]
    for name, r in res.items():
        if name == default:
            continue
        gain = r["fused"] - base["fused"]
        slower = r["query_p95_ms"] / base["query_p95_ms"]
        wins = gain >= 0.02 and slower <= 2.0
        checks += [
            (f"{name}: recall@10 gain", gain, ">=", None),
            (f"{name}: query time / default", slower, ">=", None),
            (f"{name}: wins by the rule (1 = switch)", float(wins), "<=", 0.0),
        ]
    miss = print_checks(checks, 44)
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    sys.exit(main())
