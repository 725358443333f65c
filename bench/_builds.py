"""Plain llama-cpp-python generation speed, per build of llama.cpp, each in a child process.

``--compare-build NAME=DIR`` (bench/assistant.py) names a llama-cpp-python installed into
DIR (``pip install --target DIR --no-deps llama_cpp_python-*.whl``), built with other flags
— say the ``-march=native`` build the README used to make. The installed build and each
named one answer the same conversations' messages, in rounds that alternate the builds
(this machine is noisy); a build that crashes is reported with its signal.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = r"""
import json, sys, time
import llama_cpp
model, threads, n_ctx, max_tokens, path = sys.argv[1:6]
convs = json.load(open(path))
llm = llama_cpp.Llama(model_path=model, n_ctx=int(n_ctx), n_batch=512, n_threads=int(threads),
                      n_threads_batch=int(threads), flash_attn=True, verbose=False)
out = {"system_info": llama_cpp.llama_print_system_info().decode(), "turns": []}
for conv in convs:
    llm.reset()
    for messages in conv:
        t0 = time.perf_counter(); n = 0; first = last = t0
        for chunk in llm.create_chat_completion(messages=messages, max_tokens=int(max_tokens),
                temperature=0.0, top_p=0.95, top_k=40, repeat_penalty=1.1, stream=True):
            if not chunk["choices"][0]["delta"].get("content"):
                continue
            now = time.perf_counter()
            if n == 0:
                first = now
            n, last = n + 1, now
        out["turns"].append({"ttft": first - t0, "tokens": n,
                             "tok_s": (n - 1) / (last - first) if n > 1 and last > first else None})
print(json.dumps(out))
"""


def run_build(
    site: str | None, model: Path, convs: list[list[list[dict[str, str]]]], threads: int,
    n_ctx: int, max_tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """One child on the build in ``site`` (None: the installed one): its turns, or its crash."""
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(convs, f)
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(model), str(threads), str(n_ctx), str(max_tokens),
             f.name],
            capture_output=True, text=True, env=env, timeout=1800,
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    if out.returncode < 0:
        return {"crashed": signal.Signals(-out.returncode).name}
    if out.returncode != 0:
        return {"crashed": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def compare(
    builds: dict[str, str | None], model: Path, convs: list[list[list[dict[str, str]]]],
    threads: int, n_ctx: int, max_tokens: int, rounds: int,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each build ``rounds`` times, alternating; per build the median generation tok/s and
    TTFT over every turn of every round, or the signal it died of."""
    turns: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    info: dict[str, dict[str, Any]] = {name: {} for name in builds}
    for _ in range(rounds):
        for name, site in builds.items():
            if "crashed" in info[name]:
                continue
            r = run_build(site, model, convs, threads, n_ctx, max_tokens)
            if "crashed" in r:
                info[name] = {"crashed": r["crashed"]}
                continue
            info[name]["system_info"] = r["system_info"]
            turns[name] += r["turns"]
    for name, rows in turns.items():
        if rows:
            speeds = [t["tok_s"] for t in rows if t["tok_s"] and t["tokens"] > 8]
            info[name]["tok_s"] = statistics.median(speeds) if speeds else float("nan")
            info[name]["ttft"] = statistics.median(t["ttft"] for t in rows)
            info[name]["turns"] = len(rows)
    return info
