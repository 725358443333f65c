"""End to end at 100k memories, through the public ``Memory`` API, in one run.

1. Build a store of ``--size`` (100,000) synthetic conversation turns: pairs of people
   talking in sessions of 20-30 turns spread over two years, turns like "Anna: I finally
   adopted a kitten last weekend! Her name is Milo ..." (short reactions, statements and
   long turns; ~20-25 words on average, like LoCoMo). To keep the run short the store is
   built from precomputed vectors: a pool of ``--pool`` texts is embedded with the real
   model once; each stored turn is a variant of a pool text (other speakers, a slot or two
   re-drawn, so keyword search sees realistic vocabulary) whose vector is the pool
   vector + small noise, renormalized. A wrapper embedder with the real model's id serves
   those vectors and falls back to the real model for any other text. ``sync="off"``,
   large batches, then a checkpoint.
2. Recall at 100k: a fresh process reopens the store with the real ``OnnxEmbedder`` and
   asks ``--queries`` (300) questions about the stored turns ("What is the name of Anna's
   kitten?", "What did Anna say about pottery in May 2023?") with ``recall(q, k=10)``,
   timed with the query embedding; each query's time is the median of ``--repeats``.
3. Cold open: ``Memory.open(path)`` in a fresh interpreter, and separately the first
   ``recall`` after it (which loads the ONNX model); median of 3.
4. Peak and current RSS of the query process after its queries; bytes on disk per part.
5. Ingest with real embeddings: ``--ingest`` (3,000) LoCoMo turns (``speaker: text``,
   cycled) — ``OnnxEmbedder().embed(texts)`` alone against ``Memory.remember_many`` into a
   fresh store (``sync="batch"``), each with a warmed-up embedder, interleaved, median of 2.
6. Encryption at rest, in the same run: the same 100k store built encrypted (passphrase,
   Argon2id at its defaults: the cold open pays it), recall timed in fresh processes
   alternating with the plain store's (plain, encrypted, plain, encrypted: a drift in load
   hits both), its cold open, and ``remember_many`` into a fresh encrypted store interleaved
   with the plain one. ``--no-encrypted`` skips it.

    python bench/e2e.py --check          # the issue's must-show (~2-4 minutes)
    python bench/e2e.py --size 20000 --ingest 500 --json out.json

Temp stores live under ``--dir`` (default /work/.benchtmp, a real disk). The page cache is
warm for the cold-open runs (the build just wrote the files); the model files too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from _checks import print_checks  # bench/, on sys.path when a bench runs as a script
from _locomo import turns

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "locomo-dev.json"
DIM = 384
K = 10
DEFAULTS = {"size": 100_000, "ingest": 3000, "pool": 3000, "queries": 300, "repeats": 5}
TARGETS = {
    "recall_p95_ms": 25.0,
    "open_s": 1.0,
    "ingest_ratio": 0.9,
    "enc_recall_p95_ratio": 1.15,
    "enc_remember_ratio": 0.9,
    "enc_open_s": 1.0,
}
PASSPHRASE = "correct horse battery staple"  # the encrypted store's, for this bench only


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ synthetic conversations

_NAMES = (
    "Anna Ben Carla David Elena Frank Grace Hector Irene James Keiko Liam Maria Noah Olivia "
    "Pedro Quinn Rosa Samuel Tara Umar Vera Walter Ximena Yusuf Zoe Aisha Bruno Chloe Diego "
    "Emma Felix Gina Hugo Isla Jonas Kira Leo Mei Nadia Oscar Priya Rafael Sofia Tomas Uma "
    "Victor Wendy Yara Zane Caroline Melanie Jolene Deborah Andrew Audrey Joanna Nate Tim "
    "John Evan Sam Calvin Dave Jon"
)
NAMES = _NAMES.split()
SLOTS: dict[str, tuple[str, ...]] = {
    "pet": ("dog", "cat", "puppy", "kitten", "parrot", "rabbit", "hamster", "turtle"),
    "pet_name": ("Milo", "Luna", "Bella", "Max", "Oscar", "Coco", "Pepper", "Biscuit", "Ziggy"),
    "city": (
        "Paris", "Tokyo", "Lisbon", "Denver", "Chicago", "Barcelona", "Seattle", "Kyoto",
        "Boston", "Rome", "Nashville", "Vancouver", "Mexico City", "Berlin", "Austin",
    ),
    "place": (
        "the beach", "the mountains", "the lake", "the park downtown", "the farmers market",
        "the art museum", "the public library", "the botanical garden", "the old pier",
        "my grandma's house", "the community center", "the climbing gym", "the river trail",
    ),
    "food": (
        "lasagna", "banana bread", "sushi", "tacos", "ramen", "apple pie", "chicken curry",
        "pancakes", "sourdough", "chocolate cake", "pad thai", "dumplings", "paella",
    ),
    "activity": (
        "painting", "hiking", "pottery", "swimming", "running", "rock climbing", "yoga",
        "gardening", "photography", "baking", "kayaking", "camping", "knitting", "chess",
        "salsa dancing", "birdwatching", "journaling", "surfing",
    ),
    "instrument": ("guitar", "piano", "violin", "drums", "ukulele", "cello", "saxophone"),
    "book": (
        "The Night Circus", "Becoming", "Educated", "Dune", "The Alchemist", "Atomic Habits",
        "Where the Crawdads Sing", "Little Women", "The Hobbit", "Pachinko", "Circe",
    ),
    "job": (
        "nurse", "teacher", "software engineer", "counselor", "chef", "photographer",
        "social worker", "pharmacist", "graphic designer", "paramedic",
    ),
    "event": (
        "job interview", "marathon", "art show", "charity run", "family reunion", "wedding",
        "graduation", "recital", "book launch", "adoption hearing", "conference talk",
    ),
    "rel": (
        "mom", "dad", "sister", "brother", "grandma", "cousin", "husband", "wife", "son",
        "daughter", "best friend", "aunt",
    ),
    "feeling": (
        "excited", "nervous", "proud", "exhausted", "grateful", "overwhelmed", "relieved",
        "happy", "anxious", "inspired",
    ),
    "time": (
        "yesterday", "last weekend", "last week", "a few days ago", "two weeks ago",
        "last month", "this morning", "last Friday", "over the holidays", "on Saturday",
    ),
    "group": (
        "LGBTQ support group", "book club", "running club", "church choir", "art class",
        "community garden", "writing workshop", "volunteer group", "parenting group",
    ),
    "topic": (
        "mental health", "climate change", "adoption", "LGBTQ rights", "budgeting",
        "healthy eating", "online safety", "self-care", "local history",
    ),
}  # fmt: skip

# (statement, questions about it). {S}: speaker, {O}: the other speaker, {N}: a third name.
STATEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "I finally adopted a {pet} {time}! Her name is {pet_name} and she already rules the house.",
        ("What is the name of {S}'s {pet}?", "What pet did {S} adopt?"),
    ),
    (
        "{pet_name} knocked my {food} off the counter, so dinner was a bit of a disaster, "
        "but honestly it was hilarious.",
        ("What did {pet_name} knock off the counter?", "What happened to {S}'s {food}?"),
    ),
    (
        "We just got back from {city}. The food was incredible and we spent a whole day at "
        "{place}.",
        ("Where did {S} travel recently?", "What did {S} do in {city}?"),
    ),
    (
        "I've been thinking about a trip to {city} with my {rel} next spring, maybe for a week "
        "or two.",
        ("Where is {S} planning to travel with their {rel}?", "Who is {S} going to {city} with?"),
    ),
    (
        "I started {activity} {time} and I'm already hooked. It's such a good way to clear my "
        "head after work.",
        ("What new hobby did {S} start?", "Why does {S} enjoy {activity}?"),
    ),
    (
        "Work has been crazy lately. I'm a {job} and we're short-staffed, so I've been pulling "
        "double shifts.",
        ("What is {S}'s job?", "Why has {S} been working double shifts?"),
    ),
    (
        "I got the offer! I'm going to be a {job} at a small clinic near {place}.",
        ("What job offer did {S} get?", "Where will {S} work as a {job}?"),
    ),
    (
        "My {rel} taught me how to make {food} {time}. It took three tries, but it finally came "
        "out right.",
        ("Who taught {S} to make {food}?", "What did {S} learn to cook from their {rel}?"),
    ),
    (
        "I'm reading {book} right now. It's slow at first, but the second half really got me.",
        ("What book is {S} reading?", "What does {S} think of {book}?"),
    ),
    (
        "I joined a {group} {time}. Everyone there was so welcoming and I felt {feeling} the "
        "whole evening.",
        ("What group did {S} join?", "How did {S} feel at the {group}?"),
    ),
    (
        "I've been practicing {instrument} every night. I want to play at my {rel}'s {event} "
        "in the fall.",
        ("What instrument is {S} learning?", "Where does {S} want to play the {instrument}?"),
    ),
    (
        "The {event} went better than I expected. I was so {feeling} beforehand, but everyone "
        "was really supportive.",
        ("How did {S} feel before the {event}?", "How did the {event} go for {S}?"),
    ),
    (
        "We took the kids to {place} {time}. They loved it, and we had a picnic with {food} "
        "afterwards.",
        ("Where did {S} take the kids?", "What did {S}'s family eat at the picnic?"),
    ),
    (
        "I'm training for a marathon in {city}. I ran eighteen miles on Sunday and my legs are "
        "still sore.",
        ("What is {S} training for?", "Where is {S}'s marathon?"),
    ),
    (
        "Honestly I'm {feeling}. Between moving apartments and my {rel} being sick, it's been "
        "a lot.",
        ("Why has {S} been feeling {feeling}?", "What has been stressful for {S}?"),
    ),
    (
        "I painted a sunset over {place} last night. I'll send you a picture, {O}!",
        ("What did {S} paint?", "What did {S} promise to send {O}?"),
    ),
    (
        "We're moving to {city} in a few months! My {rel} got a job there, so we're starting "
        "to pack.",
        ("Where is {S} moving?", "Why is {S} moving to {city}?"),
    ),
    (
        "I volunteered at the animal shelter {time}. There was a {pet} named {pet_name} I "
        "almost took home.",
        ("Where did {S} volunteer?", "Which animal did {S} almost adopt at the shelter?"),
    ),
    (
        "My {rel} and I finally finished the garden. We planted tomatoes, basil and some "
        "sunflowers.",
        ("What did {S} plant in the garden?", "Who helped {S} with the garden?"),
    ),
    (
        "I went to a {instrument} concert in {city} {time}. The music was amazing, I got chills.",
        ("What concert did {S} go to?", "Where did {S} see a {instrument} concert?"),
    ),
    (
        "I'm {feeling} about the {event} next week. I've prepared a lot, but you never know.",
        ("How does {S} feel about the upcoming {event}?", "What event is {S} preparing for?"),
    ),
    (
        "{O}, do you remember that {food} place near {place}? It closed down, I'm so sad.",
        ("What restaurant closed near {place}?", "Which place did {S} say closed down?"),
    ),
    (
        "I've been going to therapy and it's really helping. My counselor suggested {activity} "
        "to manage stress.",
        ("What did {S}'s counselor suggest?", "How is {S} managing stress?"),
    ),
    (
        "We celebrated my {rel}'s birthday at {place}. I baked {food} and everyone loved it.",
        ("Where did {S} celebrate their {rel}'s birthday?", "What did {S} bake for the birthday?"),
    ),
    (
        "My goal this year is to read twenty books and get better at {activity}.",
        ("What are {S}'s goals this year?", "What does {S} want to get better at?"),
    ),
    (
        "I gave a talk about {topic} at my kid's school {time}. The students asked so many "
        "good questions.",
        ("What did {S} give a talk about?", "Where did {S} talk about {topic}?"),
    ),
    (
        "Our {pet} {pet_name} had to go to the vet. She's okay now, it was just a minor infection.",
        ("Why did {pet_name} go to the vet?", "Is {S}'s {pet} okay?"),
    ),
    (
        "I bought a new camera for my birthday and I've been taking pictures at {place} every "
        "weekend.",
        ("What did {S} buy for their birthday?", "Where does {S} take photos?"),
    ),
    (
        "I ran into {N} at {place} {time}! We hadn't seen each other since college.",
        ("Who did {S} run into at {place}?", "Where did {S} meet {N}?"),
    ),
    (
        "Being a {job} is hard some days, but helping people is what keeps me going.",
        ("What keeps {S} going as a {job}?", "What does {S} do for work?"),
    ),
)
REACTIONS = (
    "Wow, that's amazing, {O}!", "Haha, I love that!", "That sounds so fun.",
    "Congrats!! You totally deserve it.", "Oh no, I'm so sorry to hear that.",
    "Thanks, {O}! That means a lot to me.", "Same here, honestly.", "Sounds like a plan!",
    "I'm so proud of you!", "Take care of yourself, okay?", "That's so sweet.",
    "Love that for you!", "Lol yes", "See you soon!", "Aww, {pet_name} is adorable!",
    "That's wild. Tell me everything.", "Good luck with the {event}!", "Yum, {food}!",
)  # fmt: skip
OPENERS = (
    "Hey {O}! ", "Hi {O}, ", "Oh, ", "Yeah, ", "Honestly, ", "Guess what? ",
    "Thanks for asking! ", "So, ", "Long time no talk! ", "",
)  # fmt: skip
FOLLOWUPS = (
    "It reminded me of when we were kids.", "I'll tell you more about it next time we talk.",
    "Anyway, how have you been?", "What about you, have you ever tried {activity}?",
    "It's been a while since I felt this {feeling}.", "I really needed that after the week I had.",
    "My {rel} thinks I'm crazy, but I don't care.",
    "I'm hoping to do it again before the end of the year.",
    "I wish you could have been there with us.", "It wasn't easy, but I'm glad I stuck with it.",
    "Do you have any tips? I feel like I'm still figuring it out.",
    "I keep telling myself to slow down, but there's always something going on.",
)  # fmt: skip
_FIELD = re.compile(r"\{(\w+)\}")
# Slots a "what did X say about ..." question can name.
TOPIC_SLOTS = frozenset(SLOTS) - {"time", "feeling", "rel"}


def _draw_slots(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(v) for k, v in SLOTS.items()}


def _fill(template: str, slots: dict[str, str]) -> str:
    return _FIELD.sub(lambda m: slots[m[1]], template)


def pool_specs(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` turn specs: which statement/reaction, openers and follow-ups, slot values.
    Lengths: a quarter short reactions, the rest statements, a third of those long."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            spec = {"kind": "reaction", "tid": rng.randrange(len(REACTIONS)), "parts": []}
        else:
            spec = {"kind": "statement", "tid": rng.randrange(len(STATEMENTS)), "parts": []}
            spec["opener"] = rng.randrange(len(OPENERS))
            if r > 0.6:
                spec["parts"] = rng.sample(range(len(FOLLOWUPS)), rng.choice((1, 1, 2, 3)))
        spec["slots"] = _draw_slots(rng)
        out.append(spec)
    return out


def template(spec: dict[str, Any]) -> str:
    """The turn's text with its slots unfilled."""
    if spec["kind"] == "reaction":
        return REACTIONS[spec["tid"]]
    opener, statement = OPENERS[spec["opener"]], STATEMENTS[spec["tid"]][0]
    if opener.endswith(", ") and not re.match(r"I\b|\{", statement):
        statement = statement[0].lower() + statement[1:]  # "Honestly, our rabbit ..."
    return " ".join([opener + statement] + [FOLLOWUPS[p] for p in spec["parts"]])


def render(spec: dict[str, Any], speaker: str, other: str, third: str) -> str:
    slots = dict(spec["slots"], S=speaker, O=other, N=third)
    return f"{speaker}: {_fill(template(spec), slots)}"


def plan_store(size: int, pool: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The ``size`` stored turns: conversations between two people, sessions of 20-30
    turns, sessions spread over two years. Each turn is a variant of a pool spec (its own
    speakers, one or two slots re-drawn) and remembers which pool entry it came from."""
    rng = random.Random(seed)
    start = datetime(2022, 1, 1, tzinfo=timezone.utc).timestamp()
    span = 2 * 365 * 86400
    turns: list[dict[str, Any]] = []
    conv = 0
    while len(turns) < size:
        a, b = rng.sample(NAMES, 2)
        conv += 1
        n_sessions = rng.randint(10, 30)
        times = sorted(start + rng.random() * span for _ in range(n_sessions))
        for s, t0 in enumerate(times, 1):
            session = f"c{conv}-D{s}"
            for i in range(rng.randint(20, 30)):
                if len(turns) == size:
                    break
                speaker, other = (a, b) if i % 2 == 0 else (b, a)
                src = rng.randrange(len(pool))
                spec = dict(pool[src])
                slots = dict(spec["slots"])
                used = sorted(set(_FIELD.findall(template(spec))) & set(SLOTS))
                for key in rng.sample(used, min(len(used), rng.choice((1, 2)))):
                    slots[key] = rng.choice(SLOTS[key])
                spec["slots"] = slots
                third = rng.choice(NAMES)
                turns.append(
                    {
                        "src": src,
                        "spec": spec,
                        "speaker": speaker,
                        "other": other,
                        "third": third,
                        "text": render(spec, speaker, other, third),
                        "when": t0 + 45 * i + rng.random() * 30,
                        "session": session,
                        "key": f"{session}:{i + 1}",
                    }
                )
    return turns


def make_queries(turns: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` questions about stored turns: 80% the statement's own questions, 10% "what did
    X say about Y", 10% the same with the month it was said in (the temporal channel)."""
    rng = random.Random(seed)
    statements = [i for i, t in enumerate(turns) if t["spec"]["kind"] == "statement"]
    out = []
    for j in range(n):
        i = rng.choice(statements)
        t = turns[i]
        spec = t["spec"]
        slots = dict(spec["slots"], S=t["speaker"], O=t["other"], N=t["third"])
        used = [f for f in _FIELD.findall(STATEMENTS[spec["tid"]][0]) if f in TOPIC_SLOTS]
        topic = slots[rng.choice(used)] if used else "that"
        r = j % 10
        if r == 8:
            q, kind = f"What did {t['speaker']} say about {topic}?", "about"
        elif r == 9:
            month = datetime.fromtimestamp(t["when"], timezone.utc).strftime("%B %Y")
            q, kind = f"What did {t['speaker']} say about {topic} in {month}?", "temporal"
        else:
            q, kind = _fill(rng.choice(STATEMENTS[spec["tid"]][1]), slots), "question"
        out.append({"q": q, "kind": kind, "key": t["key"]})
    return out


# ------------------------------------------------------------------ the wrapper embedder


class PrecomputedEmbedder:
    """The real model's identity with precomputed vectors: ``embed`` returns the vector
    given for a known text and runs the real model on any other."""

    def __init__(self, real: Any, table: dict[str, int], vectors: np.ndarray) -> None:
        self.real, self.table, self.vectors = real, table, vectors
        self.fallback = 0

    @property
    def model_id(self) -> str:
        return str(self.real.model_id)

    @property
    def dim(self) -> int:
        return DIM

    def embed(self, texts: Sequence[str], *, progress: Any = None) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        missing = []
        for i, t in enumerate(texts):
            row = self.table.get(t)
            if row is None:
                missing.append(i)
            else:
                out[i] = self.vectors[row]
        if missing:
            self.fallback += len(missing)
            out[missing] = self.real.embed([texts[i] for i in missing])
        return out


def noisy_copies(base: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``base`` rows + gaussian noise of total norm ~``sigma``, renormalized (cosine to the
    base row ~ 1/sqrt(1 + sigma^2))."""
    rng = np.random.default_rng(seed)
    x = base + rng.standard_normal(base.shape, dtype=np.float32) * np.float32(
        sigma / np.sqrt(base.shape[1])
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x.astype(np.float32, copy=False)
    return out


# ------------------------------------------------------------------ phases


def build(
    path: Path, args: argparse.Namespace, passphrase: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from localmem import Memory
    from localmem.embed import OnnxEmbedder

    res: dict[str, Any] = {}
    rng = random.Random(args.seed)
    pool = pool_specs(args.pool, rng)
    pool_texts = [render(p, *rng.sample(NAMES, 3)) for p in pool]
    real = OnnxEmbedder()
    log(f"embedding a pool of {len(pool_texts):,} texts with {real.model_id}")
    t0 = time.perf_counter()
    pool_vecs = real.embed(pool_texts)
    res["pool_embed_s"] = time.perf_counter() - t0
    log(f"  {res['pool_embed_s']:.1f} s")

    turns = plan_store(args.size, pool, args.seed + 1)
    words = [len(t["text"].split()) for t in turns]
    res["words_mean"] = float(np.mean(words))
    res["words_p10_p50_p90"] = [float(np.percentile(words, p)) for p in (10, 50, 90)]
    res["sessions"] = len({t["session"] for t in turns})
    res["speakers"] = len({t["speaker"] for t in turns})
    vecs = noisy_copies(pool_vecs[[t["src"] for t in turns]], args.sigma, args.seed + 2)
    res["cos_to_pool_mean"] = float(
        np.mean(np.sum(vecs * pool_vecs[[t["src"] for t in turns]], axis=1))
    )
    table = {t["text"]: i for i, t in enumerate(turns)}
    res["distinct_texts"] = len(table)
    emb = PrecomputedEmbedder(real, table, vecs)
    items = [
        {
            "text": t["text"],
            "when": t["when"],
            "kind": "episodic",
            "source": "import",
            "session": t["session"],
            "key": t["key"],
        }
        for t in turns
    ]
    if path.exists():
        shutil.rmtree(path)
    log(f"building {len(items):,} memories at {path} (sync=off, batch {args.build_batch})")
    t0 = time.perf_counter()
    last = [t0]
    batches: list[tuple[int, float]] = []  # (memories so far, seconds of this batch)

    def progress(done: int, total: int | None) -> None:
        now = time.perf_counter()
        prev = batches[-1][0] if batches else 0
        batches.append((done, now - t0 - sum(b for _, b in batches)))
        if now - last[0] > 5 or done == total:
            last[0] = now
            rate = done / (now - t0)
            log(
                f"  {done:,}/{total:,} ({rate:,.0f}/s; "
                f"last batch {(done - prev) / batches[-1][1]:,.0f}/s)"
            )

    with Memory.open(path, embedder=emb, sync="off", key=passphrase) as mem:
        mem.remember_many(items, progress=progress, batch=args.build_batch)
        res["remember_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        mem.store.checkpoint()
        res["checkpoint_s"] = time.perf_counter() - t1
        res["count"] = len(mem)
    res["build_s"] = time.perf_counter() - t0
    res["fallback_embeds"] = emb.fallback
    # Per batch of remember_many: a batch that crosses an automatic checkpoint shows here.
    res["batches"] = [{"done": d, "s": t} for d, t in batches]
    res["batch_s_median"] = statistics.median(t for _, t in batches)
    res["batch_s_max"], res["batch_max_at"] = max((t, d) for d, t in batches)
    log(
        f"  built in {res['build_s']:.1f} s ({args.size / res['remember_s']:,.0f}/s "
        f"remember_many, checkpoint {res['checkpoint_s']:.1f} s)"
    )
    return turns, res


def memory_mb() -> dict[str, float]:
    """This process's peak RSS and current RSS (VmHWM, VmRSS), the current one split into
    private memory (RssAnon) and mapped file pages (RssFile: the arena, index and model
    files, shared with the page cache and reclaimable). ``ru_maxrss`` is kept too, but a
    child inherits its parent's peak through fork + exec (the exec'd process starts with
    the parent's high-water mark), so for a process started by a big one VmHWM is the
    honest peak."""
    out = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    names = {"VmHWM": "peak_rss_mb", "VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in names:
            out[names[name]] = int(value.split()[0]) / 1024
    return out


def query_worker(store: str, qfile: str, repeats: int) -> dict[str, Any]:
    """Runs in a fresh process: open with the real embedder, warm up, then every query
    ``repeats`` times (repeat outer, query inner); per-query medians."""
    from localmem import Memory

    queries = json.loads(Path(qfile).read_text())
    now = queries["now"]
    qs = queries["queries"]
    stages = {"imported": memory_mb()}
    t0 = time.perf_counter()
    mem = Memory.open(store)
    open_s = time.perf_counter() - t0
    stages["opened"] = memory_mb()
    t0 = time.perf_counter()
    mem.recall(qs[0]["q"], k=K, now=now)
    first_s = time.perf_counter() - t0
    stages["first recall"] = memory_mb()
    for q in qs[:10]:  # warm-up
        mem.recall(q["q"], k=K, now=now)
    load = os.getloadavg()[0]
    lat = np.zeros((repeats, len(qs)))
    emb = np.zeros((repeats, len(qs)))
    found = [0] * len(qs)
    nhits = [0] * len(qs)
    for r in range(repeats):
        for i, q in enumerate(qs):
            t0 = time.perf_counter()
            hits = mem.recall(q["q"], k=K, now=now)
            lat[r, i] = time.perf_counter() - t0
            if r == 0:
                nhits[i] = len(hits)
                found[i] = int(any(h.memory.key == q["key"] for h in hits))
            t0 = time.perf_counter()
            mem.embedder.embed([q["q"]])
            emb[r, i] = time.perf_counter() - t0
    per_q = np.median(lat, axis=0) * 1e3
    per_emb = np.median(emb, axis=0) * 1e3
    out: dict[str, Any] = {
        "open_s": open_s,
        "first_recall_s": first_s,
        "n": len(qs),
        "repeats": repeats,
        "p50_ms": float(np.percentile(per_q, 50)),
        "p95_ms": float(np.percentile(per_q, 95)),
        "p99_ms": float(np.percentile(per_q, 99)),
        "max_ms": float(per_q.max()),
        "embed_p50_ms": float(np.percentile(per_emb, 50)),
        "embed_p95_ms": float(np.percentile(per_emb, 95)),
        "by_kind": {},
        "source_in_top10": float(np.mean(found)),
        "mean_hits": float(np.mean(nhits)),
        "empty": int(sum(1 for h in nhits if h == 0)),
        **memory_mb(),
        "stages": stages,
        "loadavg_1m": [load, os.getloadavg()[0]],
        "memories": len(mem),
    }
    for kind in sorted({q["kind"] for q in qs}):
        sel = [i for i, q in enumerate(qs) if q["kind"] == kind]
        v = per_q[sel]
        out["by_kind"][kind] = {
            "n": len(sel),
            "p50_ms": float(np.percentile(v, 50)),
            "p95_ms": float(np.percentile(v, 95)),
            "source_in_top10": float(np.mean([found[i] for i in sel])),
        }
    mem.close()
    return out


COLD = r"""
import json, sys, time
t0 = time.perf_counter()
from localmem import Memory
t1 = time.perf_counter()
mem = Memory.open(sys.argv[1])
t2 = time.perf_counter()
hits = mem.recall(sys.argv[2], k=10, now=float(sys.argv[3]))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_recall_s": t3 - t2,
                  "hits": len(hits), "n": len(mem)}))
mem.close()
"""


def _env(passphrase: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LOCALMEM_PASSPHRASE", None)
    if passphrase is not None:  # what a script or a session with no keyring would set
        env["LOCALMEM_PASSPHRASE"] = passphrase
    return env


def cold_open(
    path: Path, query: str, now: float, repeats: int, passphrase: str | None = None
) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-c", COLD, str(path), query, str(now)],
            capture_output=True,
            text=True,
            check=True,
            env=_env(passphrase),
        )
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["process_s"] = time.perf_counter() - t0
        runs.append(r)
        log(
            f"  cold: import {r['import_s']:.2f} s, open {r['open_s']:.3f} s, first recall "
            f"{r['first_recall_s']:.3f} s, process {r['process_s']:.2f} s"
        )
    keys = ("import_s", "open_s", "first_recall_s", "process_s")
    return {**{k: statistics.median(r[k] for r in runs) for k in keys}, "runs": runs}


def disk_usage(path: Path) -> dict[str, int]:
    parts: dict[str, int] = {}
    for f in path.rglob("*"):
        if not f.is_file():
            continue
        rel = f.relative_to(path).parts
        part = rel[0] if len(rel) > 1 else ("catalog.sqlite*" if "catalog" in rel[0] else "other")
        parts[part] = parts.get(part, 0) + f.stat().st_size
    parts["total"] = sum(parts.values())
    return parts


def locomo_items(n: int, data: Path) -> list[dict[str, Any]]:
    base = [
        dict(t, session=f"{s['sample_id']}-{t['session']}")  # one store: sessions per sample
        for s in json.loads(data.read_text())
        for t in turns(s)
    ]
    # Past the data set's end it repeats, each round under keys of its own: the same key and
    # text again is a retry, which remember() answers with the memory already stored.
    return [
        dict(base[i % len(base)], key=f"{base[i % len(base)]['key']}/{i // len(base)}")
        if i >= len(base) else dict(base[i])
        for i in range(n)
    ]  # fmt: skip


def ingest(
    root: Path, n: int, data: Path, repeats: int = 2, encrypted: bool = True
) -> dict[str, Any]:
    """The model's own throughput against remember_many (fresh store, sync="batch"), each
    with its own embedder warmed up on the same texts; interleaved, median of ``repeats``.
    With ``encrypted``, remember_many into a fresh encrypted store too, in the same rounds."""
    from localmem import Memory
    from localmem.embed import OnnxEmbedder

    items = locomo_items(n, data)
    texts = [d["text"] for d in items]
    words = [len(t.split()) for t in texts]
    e_model, e_mem = OnnxEmbedder(), OnnxEmbedder()
    log(f"ingest: warming up two embedders on {n:,} LoCoMo turns")
    e_model.embed(texts)
    e_mem.embed(texts)
    t_model: list[float] = []
    t_mem: list[float] = []
    t_enc: list[float] = []

    def model() -> None:
        t0 = time.perf_counter()
        e_model.embed(texts)
        t_model.append(time.perf_counter() - t0)

    def memory(r: int, passphrase: str | None = None) -> None:
        path = root / f"ingest-{r}"
        if path.exists():
            shutil.rmtree(path)
        with Memory.open(path, embedder=e_mem, key=passphrase) as mem:
            t0 = time.perf_counter()
            mem.remember_many(items)
            (t_mem if passphrase is None else t_enc).append(time.perf_counter() - t0)
            assert len(mem) == n
        shutil.rmtree(path)

    names = ["model", "plain", *(["encrypted"] if encrypted else [])]
    for r in range(repeats):  # A B C, C B A, ...: a drift in machine load hits all alike
        for name in names if r % 2 == 0 else names[::-1]:
            if name == "model":
                model()
            else:
                memory(r, PASSPHRASE if name == "encrypted" else None)
        log(
            f"  repeat {r + 1}: embed {n / t_model[-1]:,.0f}/s, remember_many "
            f"{n / t_mem[-1]:,.0f}/s" + (f", encrypted {n / t_enc[-1]:,.0f}/s" if encrypted else "")
        )
    model_s, mem_s = statistics.median(t_model), statistics.median(t_mem)
    return {
        "texts": n,
        "words_mean": float(np.mean(words)),
        "embed_s": model_s,
        "remember_many_s": mem_s,
        "embed_per_s": n / model_s,
        "remember_many_per_s": n / mem_s,
        "ratio": model_s / mem_s,
        "embed_runs_s": t_model,
        "remember_many_runs_s": t_mem,
        **(
            {
                "encrypted_remember_many_s": statistics.median(t_enc),
                "encrypted_remember_many_per_s": n / statistics.median(t_enc),
                "encrypted_ratio": mem_s / statistics.median(t_enc),
                "encrypted_runs_s": t_enc,
            }
            if encrypted
            else {}
        ),
    }


# ------------------------------------------------------------------ main


def query_process(
    store: Path, qfile: Path, repeats: int, passphrase: str | None = None, ranker: bool = True
) -> dict[str, Any]:
    """query_worker in a fresh process (LOCALMEM_PASSPHRASE for an encrypted store;
    LOCALMEM_RANKER=off for the fused order alone)."""
    env = _env(passphrase)
    if not ranker:
        env["LOCALMEM_RANKER"] = "off"
    p = subprocess.run(
        [sys.executable, __file__, "--_query-worker", str(store), str(qfile),
         "--repeats", str(repeats)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise RuntimeError("the query process failed")
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import localmem

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="e2e-", dir=root))
    res: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "kernel": localmem.build_info()["kernel"],
        "cores": len(os.sched_getaffinity(0)),
    }
    store = work / "store"
    try:
        turns, res["build"] = build(store, args)
        now = max(t["when"] for t in turns) + 86400
        queries = make_queries(turns, args.queries, args.seed + 3)
        res["query_examples"] = [q["q"] for q in queries[:3]] + [
            q["q"] for q in queries if q["kind"] == "temporal"
        ][:1]
        del turns
        qfile = work / "queries.json"
        qfile.write_text(json.dumps({"now": now, "queries": queries}))
        res["disk"] = disk_usage(store)

        enc_store = work / "store-encrypted"
        if args.encrypted:
            log("the same store, encrypted")
            _, res["enc_build"] = build(enc_store, args, PASSPHRASE)
        log(f"recall: {len(queries)} queries x {args.repeats} in a fresh process")
        res["recall"] = query_process(store, qfile, args.repeats)
        log(f"  p50 {res['recall']['p50_ms']:.1f} ms, p95 {res['recall']['p95_ms']:.1f} ms")
        # The re-ranker's cost, in the same minute: the fused order alone (LOCALMEM_RANKER=off).
        res["recall_unranked"] = query_process(store, qfile, args.repeats, ranker=False)
        u = res["recall_unranked"]
        log(f"  without the re-ranker: p50 {u['p50_ms']:.1f} ms, p95 {u['p95_ms']:.1f} ms")
        if args.encrypted:  # plain, encrypted, plain, encrypted
            runs = {"plain": [res["recall"]], "encrypted": []}
            for name in ("encrypted", "plain", "encrypted"):
                r = query_process(
                    enc_store if name == "encrypted" else store,
                    qfile,
                    args.repeats,
                    PASSPHRASE if name == "encrypted" else None,
                )
                runs[name].append(r)
                log(f"  {name}: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms")
            res["enc_recall_runs"] = runs
            res["enc_recall"] = {
                name: {"p50_ms": statistics.median(r["p50_ms"] for r in rs),
                       "p95_ms": statistics.median(r["p95_ms"] for r in rs)}
                for name, rs in runs.items()
            }  # fmt: skip

        log("cold open: 3 fresh processes")
        res["cold"] = cold_open(store, queries[0]["q"], now, 3)
        res["disk"] = disk_usage(store)  # after the reopens (the catalog may have moved)
        if args.encrypted:
            log("cold open of the encrypted store (LOCALMEM_PASSPHRASE): 3 fresh processes")
            res["enc_cold"] = cold_open(enc_store, queries[0]["q"], now, 3, PASSPHRASE)
            res["enc_disk"] = disk_usage(enc_store)
        if not args.keep:
            shutil.rmtree(store)
            shutil.rmtree(enc_store, ignore_errors=True)
        res["ingest"] = ingest(work, args.ingest, Path(args.data), encrypted=args.encrypted)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    return res


def report(res: dict[str, Any], args: argparse.Namespace) -> list[str]:
    b, r, c, d, g = res["build"], res["recall"], res["cold"], res["disk"], res["ingest"]
    mb = 1 << 20
    print(
        f"localmem end to end: {b['count']:,} memories, {res['cores']} cores, "
        f"kernel {res['kernel']}, k={K}"
    )
    print(
        f"store: {b['sessions']:,} sessions, {b['speakers']} speakers, words/turn mean "
        f"{b['words_mean']:.1f} (p10/p50/p90 "
        + "/".join(f"{x:.0f}" for x in b["words_p10_p50_p90"])
        + f"), {b['distinct_texts']:,} distinct texts; vectors = {args.pool:,} real pool "
        f"vectors + noise (cos to pool {b['cos_to_pool_mean']:.2f})"
    )
    print(
        f"build: pool embedding {b['pool_embed_s']:.1f} s; remember_many {b['remember_s']:.1f} s "
        f"({b['count'] / b['remember_s']:,.0f}/s, sync=off, precomputed vectors); checkpoint "
        f"{b['checkpoint_s']:.1f} s; real-model fallbacks {b['fallback_embeds']}; batches of "
        f"{args.build_batch:,}: median {b['batch_s_median']:.2f} s, slowest "
        f"{b['batch_s_max']:.2f} s (ending at {b['batch_max_at']:,})"
    )
    print("queries: " + " | ".join(res["query_examples"]))

    print(
        f"\nrecall(q, k={K}), {r['n']} queries, median of {r['repeats']} per query, fresh process"
    )
    print(
        "(source@10: the turn a question was made from is in the top 10 - a sanity figure, "
        "not a quality one: each speaker says much the same in many turns)"
    )
    print(f"{'queries':<12}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'source@10':>11}")
    for kind, v in r["by_kind"].items():
        print(
            f"{kind:<12}{v['n']:>5}{v['p50_ms']:>9.1f}{v['p95_ms']:>9.1f}"
            f"{v['source_in_top10']:>11.2f}"
        )
    print(
        f"{'all':<12}{r['n']:>5}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
        f"{r['source_in_top10']:>11.2f}   (p99 {r['p99_ms']:.1f}, max {r['max_ms']:.1f})"
    )
    print(
        f"  of which query embedding: p50 {r['embed_p50_ms']:.1f} ms, p95 "
        f"{r['embed_p95_ms']:.1f} ms; mean hits {r['mean_hits']:.1f}, empty results "
        f"{r['empty']}"
    )
    print(
        f"  load average (1 min) {r['loadavg_1m'][0]:.2f} before the timed queries, "
        f"{r['loadavg_1m'][1]:.2f} after (2 = both cores busy)"
    )
    print(
        f"\nquery process memory (open {r['open_s']:.2f} s, first recall "
        f"{r['first_recall_s']:.2f} s); RSS = private (anon) + mapped files (arena, index, model)"
    )
    print(f"{'after':<16}{'peak RSS':>10}{'RSS':>8}{'anon':>8}{'file':>8}   MB")
    for stage, m in [*r["stages"].items(), (f"{r['n']} queries", r)]:
        print(
            f"{stage:<16}{m['peak_rss_mb']:>10.0f}{m['rss_mb']:>8.0f}{m['anon_mb']:>8.0f}"
            f"{m['file_mb']:>8.0f}"
        )

    print(f"\ncold open, median of {len(c['runs'])} fresh processes (warm page cache)")
    print(
        f"  import localmem {c['import_s']:.2f} s; Memory.open {c['open_s']:.3f} s; first "
        f"recall {c['first_recall_s']:.3f} s (loads the model); whole process "
        f"{c['process_s']:.2f} s"
    )
    print(
        "\ndisk: "
        + ", ".join(f"{k} {v / mb:.1f} MB" for k, v in d.items() if k != "total")
        + f"; total {d['total'] / mb:.1f} MB ({d['total'] / b['count']:,.0f} B/memory)"
    )

    print(
        f"\ningest: {g['texts']:,} LoCoMo turns ({g['words_mean']:.1f} words), warmed-up "
        f"embedders, median of {len(g['embed_runs_s'])}"
    )
    print(f"  OnnxEmbedder.embed        {g['embed_per_s']:>8,.0f} texts/s  ({g['embed_s']:.1f} s)")
    print(
        f"  Memory.remember_many      {g['remember_many_per_s']:>8,.0f} texts/s  "
        f"({g['remember_many_s']:.1f} s, sync=batch)  = {g['ratio']:.2f}x the model"
    )

    figures = [
        (
            f"recall p95 ms at {b['count']:,} (with embedding)",
            r["p95_ms"],
            "<=",
            TARGETS["recall_p95_ms"],
        ),
        (f"recall p50 ms at {b['count']:,}", r["p50_ms"], "", None),
        ("  p95 without the re-ranker (same run)", res["recall_unranked"]["p95_ms"], "", None),
        ("cold Memory.open s", c["open_s"], "<=", TARGETS["open_s"]),
        ("cold first recall s", c["first_recall_s"], "", None),
        ("query process peak RSS MB", r["peak_rss_mb"], "", None),
        ("query process RSS MB", r["rss_mb"], "", None),
        ("  of which private (RssAnon) MB", r["anon_mb"], "", None),
        ("store on disk MB", d["total"] / mb, "", None),
        ("remember_many / embed throughput", g["ratio"], ">=", TARGETS["ingest_ratio"]),
    ]
    if "enc_recall" in res:
        er, ec, eb = res["enc_recall"], res["enc_cold"], res["enc_build"]
        print(
            f"\nencryption at rest, same run: recall in fresh processes, plain / encrypted "
            f"alternating, {len(res['enc_recall_runs']['plain'])} each (medians)"
        )
        for name in ("plain", "encrypted"):
            print(f"  {name:<10} p50 {er[name]['p50_ms']:.1f} ms, p95 {er[name]['p95_ms']:.1f} ms")
        print(
            f"  encrypted cold: Memory.open {ec['open_s']:.3f} s (with Argon2id), first recall "
            f"{ec['first_recall_s']:.3f} s; build remember_many {eb['remember_s']:.1f} s vs "
            f"{b['remember_s']:.1f} s plain; disk {res['enc_disk']['total'] / mb:.1f} MB vs "
            f"{d['total'] / mb:.1f} MB"
        )
        print(
            f"  remember_many (real embeddings, sync=batch): plain "
            f"{g['remember_many_per_s']:,.0f}/s, encrypted "
            f"{g['encrypted_remember_many_per_s']:,.0f}/s"
        )
        figures += [
            ("encrypted / plain recall p95", er["encrypted"]["p95_ms"] / er["plain"]["p95_ms"],
             "<=", TARGETS["enc_recall_p95_ratio"]),
            ("encrypted / plain remember_many", g["encrypted_ratio"], ">=",
             TARGETS["enc_remember_ratio"]),
            ("encrypted cold Memory.open s", ec["open_s"], "<=", TARGETS["enc_open_s"]),
        ]  # fmt: skip
    return print_checks(figures, 42)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--check", action="store_true", help="default sizes; print vs targets; exit 1 on a miss"
    )
    p.add_argument("--size", type=int, default=DEFAULTS["size"], help="memories in the store")
    p.add_argument("--pool", type=int, default=DEFAULTS["pool"], help="really embedded texts")
    p.add_argument("--queries", type=int, default=DEFAULTS["queries"])
    p.add_argument("--repeats", type=int, default=DEFAULTS["repeats"])
    p.add_argument("--ingest", type=int, default=DEFAULTS["ingest"], help="texts to ingest")
    p.add_argument("--sigma", type=float, default=0.45, help="noise on derived vectors")
    p.add_argument("--build-batch", type=int, default=8192)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--dir", default="/work/.benchtmp", help="where temp stores go")
    p.add_argument("--keep", action="store_true", help="keep the store (path on stderr)")
    p.add_argument("--no-encrypted", dest="encrypted", action="store_false",
                   help="skip the encrypted store (issue 25's comparison)")  # fmt: skip
    p.add_argument("--json", help="write every figure as JSON")
    p.add_argument("--_query-worker", nargs=2, metavar=("STORE", "QUERIES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._query_worker:
        store, qfile = args._query_worker
        print(json.dumps(query_worker(store, qfile, args.repeats)))
        return 0
    if args.check:
        changed = [k for k, v in DEFAULTS.items() if getattr(args, k) != v]
        if changed:
            log(f"--check runs the default sizes; ignoring --{', --'.join(changed)}")
        for k, v in DEFAULTS.items():
            setattr(args, k, v)
    res = run(args)
    miss = report(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    sys.exit(main())
