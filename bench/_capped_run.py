"""One engine's generation run, for bench/flash.py to start in its own process (inside a
memory cgroup): reads a JSON spec on stdin, writes a JSON result on stdout.

spec: engine ("llama" | "flash"), path, threads, n_ctx, memory_budget (flash: bytes or
None for dense), prompt (token ids), forced (token ids fed one at a time after the prompt,
the first `warmup` untimed). result: the argmax after each forced token, seconds per timed
token, bytes this process read from storage during the timed tokens (/proc/self/io), the
engine's plan (flash).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    spec = json.load(sys.stdin)
    from localmem.machine import available_memory, io_read_bytes

    available = available_memory()  # what the engines size their context by
    prompt, forced, warmup = spec["prompt"], spec["forced"], spec["warmup"]
    t_load = time.perf_counter()
    if spec["engine"] == "llama":
        import llama_cpp

        llm = llama_cpp.Llama(
            spec["path"], n_ctx=spec["n_ctx"], n_threads=spec["threads"],
            n_threads_batch=spec["threads"], verbose=False,
        )  # fmt: skip

        n_vocab = llm.n_vocab()

        def step(toks: list[int]) -> np.ndarray:
            llm.eval(toks)  # without logits_all it keeps no scores: the last row is read here
            return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))

        plan: dict = {}
    else:
        from localmem.llm import FlashEngine

        eng = FlashEngine(
            spec["path"], n_ctx=spec["n_ctx"], threads=spec["threads"],
            memory_budget=spec.get("memory_budget"),
        )  # fmt: skip
        m = eng._model

        def step(toks: list[int]) -> np.ndarray:
            return m.eval(np.asarray(toks, np.int32))[0]

        plan = eng.plan()
    load_s = time.perf_counter() - t_load
    step(prompt)
    top1, secs = [], []
    io0 = 0
    for i, tok in enumerate(forced):
        if i == warmup:
            io0 = io_read_bytes()
        t0 = time.perf_counter()
        top1.append(int(np.argmax(step([tok]))))
        if i >= warmup:
            secs.append(time.perf_counter() - t0)
    timed = len(forced) - warmup
    json.dump(
        {
            "top1": top1,
            "secs": secs,
            "tok_s": timed / sum(secs),
            "read_per_token": (io_read_bytes() - io0) / timed,
            "load_s": load_s,
            "plan": plan,
            "available_memory": available,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
