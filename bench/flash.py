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
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _cgroup import MemoryCgroup  # bench/, on sys.path when a bench runs as a script
from _checks import print_checks

from localmem.llm import FlashEngine
from localmem.llm.llamacpp import resolve


def evict_file(path: Path) -> None:
    """Drops a file's pages from the page cache (the resident weights are read again)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


WARMUP = 6  # untimed tokens of a capped run (the I/O thread and the page cache settle)
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


def greedy(flash: FlashEngine, prompt: list[int], n: int) -> list[int]:
    """n tokens of the dense engine's greedy continuation of prompt (fed to every capped
    run, so that each sees the same text and its argmax can be compared)."""
    m = flash._model
    m.truncate(0)
    out = [int(m.eval(np.asarray(prompt, np.int32))[0].argmax())]
    while len(out) < n:
        out.append(int(m.eval(np.asarray(out[-1:], np.int32))[0].argmax()))
    return out


def disk_bandwidth(path: Path, block: int, passes: int = 3) -> float:
    """Bytes/s of O_DIRECT reads of `block` bytes through the file, one at a time (how the
    weight stream reads): the median of a few passes."""
    import mmap

    buf = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    rates = []
    for _ in range(passes):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            t0, done = time.perf_counter(), 0
            while (n := os.preadv(fd, [buf], done)) == block:
                done += n
            rates.append(done / (time.perf_counter() - t0))
        finally:
            os.close(fd)
    return statistics.median(rates)


def run_capped(spec: dict, limit: int | None) -> tuple[dict | None, int, str]:
    """One engine run in its own process under a cgroup of `limit` bytes (None: no limit),
    the model evicted from the page cache first: (result or None, peak bytes, error)."""
    evict_file(Path(spec["path"]))
    child = [sys.executable, str(Path(__file__).with_name("_capped_run.py"))]
    with MemoryCgroup(limit) as cg:
        p = cg.run(child, input=json.dumps(spec), capture_output=True, text=True)
        peak = cg.peak()
    if p.returncode != 0:
        why = "killed by the OOM killer" if p.returncode == -9 else p.stderr.strip()[-300:]
        return None, peak, why
    return json.loads(p.stdout), peak, ""


def capped(args, path: Path, weights: int, prompt: list[int], forced: list[int]) -> list:
    """The engines under a hard memory cap (the issue's must-show)."""
    why = MemoryCgroup.unavailable()
    if why:
        print(f"\ncapped runs skipped: {why}")
        return []
    base = {"path": str(path), "threads": args.threads, "n_ctx": 512, "prompt": prompt,
            "forced": forced, "warmup": WARMUP}  # fmt: skip
    llama, dense = {**base, "engine": "llama"}, {**base, "engine": "flash"}
    # Non-weight footprint: the peak of an uncapped run less the weights it mapped.
    ref, peak_f, err = run_capped(dense, None)
    if ref is None:
        print(f"\ncapped runs skipped: the uncapped flash run failed: {err}")
        return []
    r_llama, peak_l, err = run_capped(llama, None)
    foot = {"llama": peak_l - weights, "flash": peak_f - weights}
    # The stream's buffers are the size of its largest streamed tensor, rounded for O_DIRECT.
    slot = max(ref["plan"].get("slot_bytes", 0), 1 << 19)
    bw = disk_bandwidth(path, slot)
    print(f"\ncapped runs: weights {weights / 1e6:.1f} MB; non-weight footprint (uncapped "
          f"peak - weights): llama.cpp {foot['llama'] / 1e6:.1f} MB, flash "
          f"{foot['flash'] / 1e6:.1f} MB; uncapped tok/s: flash dense {ref['tok_s']:.1f}, "
          f"llama.cpp {r_llama['tok_s'] if r_llama else float('nan'):.1f}; disk, O_DIRECT "
          f"reads of {slot >> 10} KiB one at a time: {bw / 1e9:.2f} GB/s")  # fmt: skip
    print(f"  {'cap':<6}{'engine':<34}{'limit MB':>9}{'tok/s':>8}{'MB read/token':>15}"
          f"{'top-1 = dense':>15}")  # fmt: skip
    figures, least = [], None
    for frac in args.cap:
        engines = {
            "llama.cpp (mmap)": (llama, foot["llama"]),
            "flash dense (mmap)": (dense, foot["flash"]),
            "flash streaming": ({**dense, "memory_budget": int(frac * weights)}, foot["flash"]),
        }
        runs: dict[str, list[dict]] = {k: [] for k in engines}
        errs: dict[str, str] = {}
        for _ in range(args.capped_runs):  # interleaved: the machine's noise hits all alike
            for name, (spec, fp) in engines.items():
                r, _, err = run_capped(spec, int(fp + frac * weights))
                if r is None:
                    errs[name] = err
                else:
                    runs[name].append(r)
        row = {}
        for name, rs in runs.items():
            limit = (engines[name][1] + frac * weights) / 1e6
            if not rs:
                print(f"  {frac:<6}{name:<34}{limit:>9.1f}  failed: {errs[name]}")
                continue
            tok_s = statistics.median(r["tok_s"] for r in rs)
            per_tok = statistics.median(r["read_per_token"] for r in rs)
            agree = min(np.mean(np.asarray(r["top1"]) == np.asarray(ref["top1"])) for r in rs)
            row[name] = (tok_s, per_tok, agree, rs[0]["plan"])
            print(f"  {frac:<6}{name:<34}{limit:>9.1f}{tok_s:>8.1f}{per_tok / 1e6:>15.1f}"
                  f"{agree:>15.3f}")  # fmt: skip
        if "flash streaming" in row:
            plan = row["flash streaming"][3]
            print(f"        plan: {plan['pinned_bytes'] / 1e6:.1f} MB pinned, "
                  f"{plan['streamed_bytes'] / 1e6:.1f} MB/token streamed in "
                  f"{plan['ffn_streamed']} reads of <= {plan['slot_bytes'] >> 10} KiB, "
                  f"{plan['slots']} buffers, O_DIRECT {plan['direct_io']}")  # fmt: skip
        if "flash streaming" not in row or "llama.cpp (mmap)" not in row:
            if frac <= 0.5:
                least = frac
            continue
        s_, l_ = row["flash streaming"], row["llama.cpp (mmap)"]
        tag = f"cap {frac}"
        tok_target, byte_target = (3.0, 0.35) if frac >= 0.75 else (2.0, 0.45)
        figures += [
            (f"{tag}: streaming tok/s / llama.cpp", s_[0] / l_[0], ">=", tok_target),
            (f"{tag}: streaming bytes/token / llama.cpp", s_[1] / l_[1], "<=", byte_target),
            (f"{tag}: streaming top-1 = uncapped dense", s_[2], ">=", 1.0),
        ]
        if frac == 0.75:
            bound = min(ref["tok_s"], bw / max(1.0, s_[1]))
            figures.append((f"{tag}: overlap, tok/s / min(dense, disk/bytes)", s_[0] / bound,
                            ">=", 0.8))  # fmt: skip
    if least is not None:
        print(f"  cap {least}: the least budget this model runs in is above it (see above)")
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="run the must-show and exit 1 on a miss")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", type=Path, help="a local Llama GGUF (default: the embedded one)")
    ap.add_argument(
        "--cap",
        type=float,
        nargs="*",
        metavar="F",
        help="run each engine in its own process under a memory cgroup of its non-weight "
        "footprint + F x the weights (default F: 0.9 0.75 0.5; needs root)",
    )
    ap.add_argument("--capped-tokens", type=int, default=32, help="timed tokens per capped run")
    ap.add_argument("--capped-runs", type=int, default=3, help="interleaved runs per engine")
    ap.add_argument(
        "--capped-only", action="store_true", help="only the capped runs (no dense comparison)"
    )
    args = ap.parse_args()
    if args.cap is not None and not args.cap:
        args.cap = [0.9, 0.75, 0.5]
    import llama_cpp

    path = args.model or resolve(None)[1]
    flash = FlashEngine(path, n_ctx=4096, threads=args.threads)
    ref = None if args.capped_only else llama_cpp.Llama(
        str(path), n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads,
        logits_all=True, verbose=False,
    )  # fmt: skip
    print(f"model {path.name} ({path.stat().st_size:,} B), {args.threads} threads, "
          f"kernel {flash.load_stats.extra['kernel']}, "
          f"weights {flash.load_stats.extra['weight_bytes']:,} B")  # fmt: skip

    text = flash.tokenize(TEXT.read_text(), special=False)
    prompt = flash._prompt.tokens([{"role": "user", "content": "Write a story about a dragon."}])
    figures = [] if ref is None else compare_dense(args, path, flash, ref, text, prompt)
    total = int(flash._model.weight_bytes)
    forced = greedy(flash, prompt, WARMUP + args.capped_tokens)
    flash.close()
    if args.cap is not None:
        figures += capped(args, path, total, prompt, forced)
    miss = print_checks(figures, 48)
    return 1 if args.check and miss else 0


if __name__ == "__main__":
    sys.exit(main())
