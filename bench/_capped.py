"""bench/flash.py's capped runs: each engine in its own process (bench/_capped_run.py) inside
a child memory cgroup (bench/_cgroup.py) whose limit is the engine's non-weight footprint
plus a share of the weights, the model file evicted from the page cache before each run."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _cgroup import MemoryCgroup
from _pagecache import evict_file

from localmem.llm import FlashEngine

WARMUP = 6  # untimed tokens of a capped run (the I/O thread and the page cache settle)


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
    refs = []
    for _ in range(3):
        r, peak_f, err = run_capped(dense, None)
        if r is None:
            print(f"\ncapped runs skipped: the uncapped flash run failed: {err}")
            return []
        refs.append((r, peak_f))
    ref = refs[0][0]
    dense_rate = statistics.median(r["tok_s"] for r, _ in refs)
    r_llama, peak_l, err = run_capped(llama, None)
    foot = {"llama": peak_l - weights, "flash": max(p for _, p in refs) - weights}
    print(f"\ncapped runs: weights {weights / 1e6:.1f} MB; non-weight footprint (uncapped "
          f"peak - weights): llama.cpp {foot['llama'] / 1e6:.1f} MB, flash "
          f"{foot['flash'] / 1e6:.1f} MB; uncapped tok/s: flash dense {dense_rate:.1f}, "
          f"llama.cpp {r_llama['tok_s'] if r_llama else float('nan'):.1f}")  # fmt: skip
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
        bws = []  # the disk's speed right before each streaming run, as the stream reads
        for _ in range(args.capped_runs):  # interleaved: the machine's noise hits all alike
            for name, (spec, fp) in engines.items():
                if name == "flash streaming":
                    bws.append(disk_bandwidth(path, 1 << 19, passes=1))
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
        bw = statistics.median(bws)
        if "flash streaming" in row:
            plan = row["flash streaming"][3]
            print(f"        plan: {plan['pinned_bytes'] / 1e6:.1f} MB pinned, "
                  f"{plan['streamed_bytes'] / 1e6:.1f} MB/token streamed in "
                  f"{plan['ffn_streamed']} reads of <= {plan['slot_bytes'] >> 10} KiB, "
                  f"{plan['slots']} buffers, O_DIRECT {plan['direct_io']}; disk beside it: "
                  f"{bw / 1e9:.2f} GB/s (O_DIRECT reads of 512 KiB, one at a time)")  # fmt: skip
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
            bound = min(dense_rate, bw / max(1.0, s_[1]))
            figures.append((f"{tag}: overlap, tok/s / min(dense, disk/bytes)", s_[0] / bound,
                            ">=", 0.8))  # fmt: skip
    if least is not None:
        print(f"  cap {least}: the least budget this model runs in is above it (see above)")
    return figures
