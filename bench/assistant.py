"""The assistant's latency and throughput on the embedded model, beside plain
llama-cpp-python on the same model and the same prompts, in the same run.

A store of 300 notes (the real ONNX embedder) about a few projects; conversations of 10
turns whose questions recall 0, 5 or 20 of them into each prompt (the Assistant's own recall
and prompt, temperature 0). Each turn is timed at the consumer of the stream — time to first
token (TTFT) and generation tokens/s — for the Assistant (``LlamaCppEngine``, KV cache kept
across turns) and then for a plain ``llama_cpp.Llama.create_chat_completion`` given exactly
the messages the Assistant sent (its own KV cache, same sampling). Also: load time, RSS, and
bytes read from storage (``/proc/self/io``) for a load with the model evicted from the page
cache, and turn 10's TTFT with its cache dropped (what KV reuse saves).

    python bench/assistant.py --check      # the issue's must-show (~5 minutes)

``--compare-build native=DIR`` (repeatable) also times plain llama-cpp-python from another
build of llama.cpp (``bench/_builds.py``): the cost of the README's portable build beside
the ``-march=native`` one it replaced, on this CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from _builds import compare  # bench/, on sys.path when a bench runs as a script
from _checks import print_checks
from _pagecache import evict_file

from localmem import Memory
from localmem.assistant import Assistant
from localmem.llm import LlamaCppEngine
from localmem.llm.llamacpp import resolve
from localmem.machine import io_read_bytes, rss_bytes, usable_cpus

PROJECTS = ["Falcon", "Heron", "Osprey", "Kestrel", "Plover", "Curlew"]
TOPICS = ["budget", "deadline", "design review", "hiring", "launch plan", "risks", "vendor"]
MAX_TOKENS = 64


def notes() -> list[str]:
    out = []
    for i in range(300):
        p, t = PROJECTS[i % len(PROJECTS)], TOPICS[(i // len(PROJECTS)) % len(TOPICS)]
        out.append(f"Project {p} {t} note {i}: the team agreed on item {i} of the {t}.")
    return out


def questions(n: int) -> list[str]:
    return [
        f"Tell me what we decided about the {TOPICS[t % len(TOPICS)]} of project "
        f"{PROJECTS[t % len(PROJECTS)]}, in a few sentences."
        for t in range(n)
    ]


def timed(pieces: Iterable[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    n, first, last = 0, 0.0, 0.0
    for p in pieces:
        if not p:
            continue
        now = time.perf_counter()
        if n == 0:
            first = now
        n, last = n + 1, now
    return {
        "ttft": first - t0,
        "tokens": n,
        "tok_s": (n - 1) / (last - first) if n > 1 and last > first else float("nan"),
    }


def plain_stream(llm: Any, messages: list[dict[str, str]]) -> Iterable[str]:
    for chunk in llm.create_chat_completion(
        messages=messages, max_tokens=MAX_TOKENS, temperature=0.0, top_p=0.95, top_k=40,
        repeat_penalty=1.1, stream=True,
    ):  # fmt: skip
        yield chunk["choices"][0]["delta"].get("content") or ""


def conversation(
    mem: Memory, ours: LlamaCppEngine, plain: Any, n_mem: int, turns: int
) -> list[dict[str, Any]]:
    bot = Assistant(
        mem, ours, recall_k=n_mem, memory_tokens=4000, max_tokens=MAX_TOKENS, temperature=0.0,
        remember=False,
    )  # fmt: skip
    # A conversation starts with nothing cached, as in a new process.
    ours.reset()
    plain.reset()
    rows = []
    for t, q in enumerate(questions(turns)):
        turn = bot.chat(q)
        a = timed(turn)
        t0 = time.perf_counter()
        bot.wait_ready()  # the read-ahead, before the peer's turn: never beside its timing
        a["ahead"] = time.perf_counter() - t0
        st = turn.stats
        assert st is not None
        # The same messages to plain llama-cpp-python, whose cache holds its previous turn.
        b = timed(plain_stream(plain, turn.messages))
        rows.append(
            {
                "turn": t + 1, "placed": len(turn.memories), "ours": a, "plain": b,
                "messages": turn.messages,
                "prompt": st.prompt_tokens, "reused": st.reused_tokens,
                "read": st.read_bytes,
            }
        )  # fmt: skip
    # Turn 10's prompt with the cache dropped: what the reuse saved.
    ours.reset()
    cold = timed(ours.generate(turn.messages, max_tokens=MAX_TOKENS, temperature=0.0))
    rows[-1]["cold_ttft"] = cold["ttft"]
    return rows


def med(xs: Iterable[float]) -> float:
    v = [x for x in xs if x == x]
    return statistics.median(v) if v else float("nan")


def compare_builds(
    builds: dict[str, str | None], path: Path, results: dict[int, list[list[dict[str, Any]]]],
    threads: int, n_ctx: int, rounds: int,
) -> list[tuple[str, float, str, float | None]]:  # fmt: skip
    """Plain llama-cpp-python of each build on the first conversation of each memory count,
    in child processes; tok/s and TTFT beside the installed build's."""
    from localmem.llm.probe import system_features

    convs = [[r["messages"] for r in convs[0]] for convs in results.values()]
    info = compare(builds, path, convs, threads, n_ctx, MAX_TOKENS, rounds)
    base = info["installed"]
    print(
        f"\nllama.cpp builds, plain llama-cpp-python, {rounds} rounds x {len(convs)} conversations"
    )
    print(f"{'build':<12} {'tok/s':>7} {'/ installed':>12} {'TTFT':>8}  features")
    figures: list[tuple[str, float, str, float | None]] = []
    for name, b in info.items():
        if "crashed" in b:
            print(f"{name:<12} crashed with {b['crashed']}")
            continue
        feats = " ".join(system_features(b.get("system_info", "")))
        ratio = b["tok_s"] / base["tok_s"] if "tok_s" in base else float("nan")
        print(f"{name:<12} {b['tok_s']:>7.1f} {ratio:>12.3f} {b['ttft'] * 1000:>6.0f}ms  {feats}")
        if name != "installed":
            figures.append((f"generation tok/s, installed / {name} build", 1 / ratio, ">=", None))
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--repeats", type=int, default=5, help="conversations per memory count")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--dir", default="/work/.benchtmp")
    ap.add_argument(
        "--compare-build", action="append", default=[], metavar="NAME=DIR",
        help="another llama-cpp-python build (pip install --target DIR) to time beside this one",
    )  # fmt: skip
    ap.add_argument("--build-rounds", type=int, default=3)
    args = ap.parse_args()
    builds: dict[str, str | None] = {"installed": None}
    for spec in args.compare_build:
        name, _, site = spec.partition("=")
        if not site or not Path(site, "llama_cpp").is_dir():
            ap.error(f"--compare-build {spec}: expected NAME=DIR with DIR/llama_cpp")
        builds[name] = site
    import llama_cpp

    _, path = resolve(None)
    threads = usable_cpus()
    evict_file(path)
    rss0, io0, t0 = rss_bytes(), io_read_bytes(), time.perf_counter()
    ours = LlamaCppEngine(threads=threads)
    cold_load = {"s": time.perf_counter() - t0, "read": io_read_bytes() - io0}
    first = timed(ours.generate([{"role": "user", "content": "Hello!"}], max_tokens=8))
    cold_load["first_gen_read"] = ours.last_stats.read_bytes
    cold_load["first_ttft"] = first["ttft"]
    rss_ours = rss_bytes() - rss0
    rss_split = (rss_bytes("RssAnon"), rss_bytes("RssFile"))
    t0 = time.perf_counter()
    plain = llama_cpp.Llama(
        model_path=str(path), n_ctx=ours.n_ctx, n_batch=512, n_threads=threads,
        n_threads_batch=threads, flash_attn=True, verbose=False,
    )  # fmt: skip
    plain_load = time.perf_counter() - t0
    print(
        f"model {path.name} ({path.stat().st_size:,} B), n_ctx {ours.n_ctx}, {threads} threads\n"
        f"load, model not in page cache: {cold_load['s']:.2f} s, {cold_load['read']:,} B read "
        f"from storage; first reply read {cold_load['first_gen_read']:,} B more "
        f"(first token {cold_load['first_ttft'] * 1000:.0f} ms)\n"
        f"load, warm: plain llama-cpp-python {plain_load:.2f} s; RSS of our engine after load "
        f"and a first reply {rss_ours / 2**20:.0f} MiB; process RSS private "
        f"{rss_split[0] / 2**20:.0f} MiB (KV cache, buffers, Python, onnxruntime), mapped "
        f"files {rss_split[1] / 2**20:.0f} MiB (the mmap'd weights among them, shared with "
        "the page cache)",
        file=sys.stderr,
    )
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    results: dict[int, list[list[dict[str, Any]]]] = {}
    with (
        tempfile.TemporaryDirectory(dir=args.dir, prefix="assistant-") as d,
        Memory.open(Path(d) / "store", sync="off") as mem,
    ):
        mem.remember_many([{"text": t, "kind": "note"} for t in notes()])
        for n_mem in (0, 5, 20):
            results[n_mem] = []
            for r in range(args.repeats):
                rows = conversation(mem, ours, plain, n_mem, args.turns)
                results[n_mem].append(rows)
                print(f"  {n_mem:2d} memories, conversation {r + 1}: done", file=sys.stderr)
    print(
        f"\n{'memories':>8} {'turn':>4} {'prompt':>7} {'cached':>7} "
        f"{'TTFT ours':>10} {'TTFT plain':>11} {'tok/s ours':>11} {'tok/s plain':>12}"
    )
    checks: list[tuple[str, float, str, float | None]] = []
    ratios = []
    for n_mem, convs in results.items():
        for t in (1, args.turns):
            rows = [c[t - 1] for c in convs]
            assert all(r["placed"] == n_mem for r in rows), [r["placed"] for r in rows]
            print(
                f"{n_mem:>8} {t:>4} {med(r['prompt'] for r in rows):>7.0f} "
                f"{med(r['reused'] for r in rows):>7.0f} "
                f"{med(r['ours']['ttft'] for r in rows) * 1000:>8.0f}ms "
                f"{med(r['plain']['ttft'] for r in rows) * 1000:>9.0f}ms "
                f"{med(r['ours']['tok_s'] for r in rows):>11.1f} "
                f"{med(r['plain']['tok_s'] for r in rows):>12.1f}"
            )
        # The median turn 1 and turn 10 over the conversations, then their ratio: this
        # shared machine has slow seconds that hit single turns, which a median drops; a
        # ratio per conversation carries both of its turns' noise (printed, not checked).
        pairs = [c[args.turns - 1]["ours"]["ttft"] / c[0]["ours"]["ttft"] for c in convs]
        t1 = med(c[0]["ours"]["ttft"] for c in convs)
        t10 = med(c[args.turns - 1]["ours"]["ttft"] for c in convs)
        cold = med(c[args.turns - 1]["cold_ttft"] for c in convs)
        # The peer's own ratio in the same run: what the attention over the cached
        # conversation costs llama.cpp on this machine, with no memory layer around it.
        p1 = med(c[0]["plain"]["ttft"] for c in convs)
        p10 = med(c[args.turns - 1]["plain"]["ttft"] for c in convs)
        print(
            f"{'':>8} turn {args.turns} / turn 1 per conversation: "
            f"{' '.join(f'{p:.2f}' for p in pairs)}; plain llama-cpp-python's: "
            f"{p10 / p1:.2f}; turn {args.turns} with its KV cache dropped: "
            f"TTFT {cold * 1000:.0f} ms"
        )
        checks.append((f"TTFT turn {args.turns} / turn 1, {n_mem} memories", t10 / t1, "<=", 1.3))
        ratios += [
            r["ours"]["tok_s"] / r["plain"]["tok_s"]
            for c in convs
            for r in c
            if r["ours"]["tokens"] > 8 and r["plain"]["tokens"] > 8
        ]
    all_rows = [r for convs in results.values() for c in convs for r in c]
    print(
        f"\ngeneration tokens/s, median over {len(all_rows)} turns: ours "
        f"{med(r['ours']['tok_s'] for r in all_rows):.1f}, plain llama-cpp-python "
        f"{med(r['plain']['tok_s'] for r in all_rows):.1f}; bytes read from storage while "
        f"generating (warm): {sum(r['read'] for r in all_rows):,}; RSS now "
        f"{rss_bytes() / 2**20:.0f} MiB (both engines)"
    )
    print(
        "read-ahead after a reply (while the user reads it; outside TTFT): median "
        f"{med(r['ours']['ahead'] for r in all_rows) * 1000:.0f} ms, "
        f"max {max(r['ours']['ahead'] for r in all_rows) * 1000:.0f} ms"
    )
    checks.append(("generation tok/s, ours / plain (median per turn)", med(ratios), ">=", 0.95))
    if len(builds) > 1:
        checks += compare_builds(builds, path, results, threads, ours.n_ctx, args.build_rounds)
    checks.append(("load s (model not in page cache)", cold_load["s"], "<=", None))
    miss = print_checks(checks, 50)
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    sys.exit(main())
