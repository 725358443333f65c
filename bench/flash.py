"""FlashEngine (localmem's native LLM engine) beside llama-cpp-python on the same GGUF, in
the same run: quality (top-1 agreement of every position's logits, perplexity on a fixed
English text of 2,000+ tokens) and generation tokens/s on 2 threads; the streaming modes
(FFN weights read from disk under a DRAM budget): (a) naive, (b) sparse, (c) sparse +
window + bundles, with the page cache dropped first.

    python bench/flash.py --check      # the issue's must-show (a few minutes)
    # the streaming modes on a larger model (FFN widened to F16, bench/widen_ffn.py):
    python bench/widen_ffn.py /work/.benchtmp/smollm2-ffn-f16.gguf
    python bench/flash.py --model /work/.benchtmp/smollm2-ffn-f16.gguf --stream-only --check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _checks import print_checks  # bench/, on sys.path when a bench runs as a script

from localmem.llm import FlashEngine
from localmem.llm.llamacpp import resolve
from localmem.machine import io_read_bytes


def evict_file(path: Path) -> None:
    """Drops a file's pages from the page cache (the resident weights are read again)."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


PPL_TOKENS = 192  # perplexity span of the streaming modes (and of dense, for the ratio)
STREAM_TOKENS = 24
SPARSITY, WINDOW = 0.25, 5
TEXT = Path(__file__).resolve().parent.parent / "tests" / "data" / "english.txt"
CHATS = [
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain what a lighthouse keeper did.",
    "Write a haiku about autumn.",
    "How do I boil an egg?",
    "What is the difference between weather and climate?",
]


def perplexity(logits: np.ndarray, toks: list[int]) -> float:
    """exp of the mean negative log-likelihood of each next token."""
    z = logits[:-1].astype(np.float64)
    z -= z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    nll = -logp[np.arange(len(toks) - 1), toks[1:]]
    return float(np.exp(nll.mean()))


def gen_rate(step, first: int, n: int) -> float:
    """Tokens/s of n greedy steps; step(token) evaluates one token and returns logits."""
    tok = first
    t0 = time.perf_counter()
    for _ in range(n):
        tok = int(np.argmax(step(tok)))
    return n / (time.perf_counter() - t0)


def compare_dense(args, path, flash, ref, text, prompt) -> list:
    """Dense mode beside llama.cpp: top-1 agreement, perplexity, generation tok/s."""
    import llama_cpp

    # Quality: every position of the text and of chat prompts with the model's replies.
    docs = [text]
    for q in CHATS:
        msgs = [{"role": "user", "content": q}]
        ref.reset()
        reply = ref.create_chat_completion(msgs, max_tokens=96, temperature=0)
        content = reply["choices"][0]["message"]["content"] or ""
        docs.append(flash._prompt.tokens([*msgs, {"role": "assistant", "content": content}]))
    positions = agree = 0
    ppl = {}
    ref_top1 = []  # llama.cpp's argmax per position, for its self-agreement below
    for i, toks in enumerate(docs):
        ours = flash.logits(toks)
        ref.reset()
        ref.eval(toks)
        theirs = np.asarray(ref.scores[: len(toks)])
        ref_top1.append(theirs.argmax(1))
        agree += int((ours.argmax(1) == ref_top1[-1]).sum())
        positions += len(toks)
        if i == 0:
            ppl = {"flash dense": perplexity(ours, toks), "llama.cpp": perplexity(theirs, toks)}
    agreement = agree / positions
    # For scale: llama.cpp against itself when only its KV cache's precision changes.
    ref32 = llama_cpp.Llama(
        str(path), n_ctx=4096, n_threads=args.threads, logits_all=True, verbose=False,
        type_k=0, type_v=0,
    )  # fmt: skip
    self_agree = 0
    for toks, top1 in zip(docs, ref_top1, strict=True):
        ref32.reset()
        ref32.eval(toks)
        self_agree += int((np.asarray(ref32.scores[: len(toks)]).argmax(1) == top1).sum())
    ref32.close()
    print(f"\nquality over {positions:,} positions ({len(text):,} of English text, "
          f"{len(docs) - 1} chats): top-1 agreement {agreement:.4f}; llama.cpp f16 KV "
          f"vs llama.cpp f32 KV {self_agree / positions:.4f}")  # fmt: skip
    for k, v in ppl.items():
        print(f"  perplexity of the text, {k:<12} {v:8.3f}")

    # Generation speed: greedy steps after the same prompt, runs interleaved.
    m = flash._model
    ours_r, theirs_r = [], []
    for _ in range(args.runs):
        m.truncate(0)
        first = int(m.eval(np.asarray(prompt, np.int32))[0].argmax())
        ours_r.append(
            gen_rate(lambda t: m.eval(np.asarray([t], np.int32))[0], first, args.gen_tokens)
        )
        ref.reset()
        ref.eval(prompt)

        def step(t: int) -> np.ndarray:
            ref.eval([t])
            return np.asarray(ref.scores[ref.n_tokens - 1])

        theirs_r.append(gen_rate(step, first, args.gen_tokens))
    o, t = statistics.median(ours_r), statistics.median(theirs_r)
    print(f"\ngeneration, {args.gen_tokens} tokens x {args.runs} runs (median): flash dense "
          f"{o:.1f} tok/s, llama.cpp {t:.1f} tok/s, ratio {o / t:.2f}")  # fmt: skip
    ref.close()
    return [
        ("dense: top-1 agreement with llama.cpp", agreement, ">=", 0.98),
        ("dense: generation tok/s, flash / llama.cpp", o / t, ">=", 0.8),
        ("dense: perplexity, flash / llama.cpp", ppl["flash dense"] / ppl["llama.cpp"], "<=", 1.02),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="run the must-show and exit 1 on a miss")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", type=Path, help="a local Llama GGUF (default: the embedded one)")
    ap.add_argument(
        "--stream-only", action="store_true", help="only the streaming modes (no llama.cpp)"
    )
    args = ap.parse_args()
    import llama_cpp

    path = args.model or resolve(None)[1]
    flash = FlashEngine(path, n_ctx=4096, threads=args.threads)
    ref = None if args.stream_only else llama_cpp.Llama(
        str(path), n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads,
        logits_all=True, verbose=False,
    )  # fmt: skip
    print(f"model {path.name} ({path.stat().st_size:,} B), {args.threads} threads, "
          f"kernel {flash.load_stats.extra['kernel']}, "
          f"weights {flash.load_stats.extra['weight_bytes']:,} B")  # fmt: skip

    text = flash.tokenize(TEXT.read_text(), special=False)
    prompt = flash._prompt.tokens([{"role": "user", "content": "Write a story about a dragon."}])
    figures = [] if ref is None else compare_dense(args, path, flash, ref, text, prompt)
    dense_ppl_span = perplexity(flash.logits(text[:PPL_TOKENS]), text[:PPL_TOKENS])
    total = int(flash._model.weight_bytes)
    resident = int(flash._model.resident_weight_bytes)
    flash.close()

    # Streaming. The budget is half the weight bytes; the embedded model keeps more
    # than that in DRAM whatever streams (its 30 MB embedding is also its output head).
    # Where half is not even the resident part, a quarter of the streamed part is cached.
    half = total // 2
    budget = half if half > resident else resident + (total - resident) // 4
    print(f"\nstreaming: weights {total:,} B, resident (embeddings/output head, attention, "
          f"gates, norms) {resident:,} B = {resident / total:.2f}; 50% = {half:,} B "
          + (f"is below that: budget used {budget:,} B" if budget > half else ""))  # fmt: skip
    modes = {
        "(a) naive: every neuron, no cache": {"sparsity": 0.0, "window": 0},
        f"(b) sparse {SPARSITY:.0%}": {"sparsity": SPARSITY, "window": 0},
        f"(c) sparse {SPARSITY:.0%} + window {WINDOW} + bundles": {
            "sparsity": SPARSITY,
            "window": WINDOW,
        },
    }
    rows = {}
    for name, opt in modes.items():
        e = FlashEngine(path, n_ctx=1024, threads=args.threads, weight_budget=budget, **opt)
        mm = e._model
        evict_file(path)
        mm.drop_stream_cache()
        p_ = perplexity(e.logits(text[:PPL_TOKENS]), text[:PPL_TOKENS])
        mm.truncate(0)
        first = int(mm.eval(np.asarray(prompt, np.int32))[0].argmax())

        def step1(t: int, mm=mm) -> np.ndarray:
            return mm.eval(np.asarray([t], np.int32))[0]

        gen_rate(step1, first, 8)  # to the steady state
        mm.reset_stream_stats()
        io0 = io_read_bytes()
        rate = gen_rate(step1, first, STREAM_TOKENS)
        io = io_read_bytes() - io0
        st = mm.stream_stats()
        per_tok = st["bytes_read"] / STREAM_TOKENS
        active = st["neurons_active"] / st["token_layers"] / 1536
        missing = st["neurons_missing"] / st["token_layers"] / 1536
        rows[name] = (rate, per_tok / st["streamed_bytes_per_token"], p_ / dense_ppl_span)
        print(f"  {name:<44} {rate:6.2f} tok/s  read {per_tok / 1e6:6.2f} MB/token "
              f"({rows[name][1]:.3f} of streamed FFN; /proc/self/io {io / STREAM_TOKENS / 1e6:.2f})"
              f" in {st['reads'] / STREAM_TOKENS:.0f} reads  active {active:.2f}  not cached "
              f"{missing:.2f}  ppl x{rows[name][2]:.3f}")  # fmt: skip
        e.close()
    naive, best = rows[next(iter(rows))], rows[list(rows)[-1]]

    figures += [
        ("stream: budget / weight bytes", budget / total, "<=", 0.5),
        ("stream (c): bytes read per token / streamed FFN", best[1], "<=", 0.15),
        ("stream (c): tok/s / naive (a)", best[0] / naive[0], ">=", 4.0),
        ("stream (c): perplexity / dense", best[2], "<=", 1.10),
    ]
    miss = print_checks(figures, 48)
    return 1 if args.check and miss else 0


if __name__ == "__main__":
    sys.exit(main())
