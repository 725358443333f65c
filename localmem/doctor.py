"""``localmem doctor``: what this install runs on, and a quick self-check of the core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localmem import build_info, embed
from localmem.paths import default_store_path
from localmem.store import selfcheck


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


def check_llama_build(rng: np.random.Generator) -> tuple[bool, str]:
    """The installed llama.cpp: the CPU features it was compiled for (its own
    ``llama_print_system_info``) and whether it was built for this machine only."""
    from localmem.llm import probe

    build = probe.installed_build()
    if build is None:
        return False, "llama-cpp-python is not installed (pip install llama-cpp-python)"
    problems = probe.build_problems(build)
    features = " ".join(build.features) or "none reported"
    where = (
        f"GGML_NATIVE={build.options['GGML_NATIVE']} in its build record"
        if "GGML_NATIVE" in build.options
        else "no build record"
    )
    detail = f"llama-cpp-python {build.version}: CPU features {features} ({where})"
    if problems:
        return False, f"{detail}; {'; '.join(problems)}: {probe.rebuild_advice()}"
    return True, detail


def check_chat_model(rng: np.random.Generator) -> tuple[bool, str]:
    """The embedded chat model: verified against the registry, loaded, a short reply."""
    from localmem.llm import LlamaCppEngine

    with LlamaCppEngine(n_ctx=512) as e:
        reply = "".join(
            e.generate([{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0)
        )
        st, ls = e.last_stats, e.load_stats
    return bool(reply.strip()), (
        f"{e.name} (sha256 verified), loaded in {ls.seconds:.2f} s; {st.generated_tokens} "
        f"tokens at {st.generation_tokens_per_s:.0f} tok/s"
    )


BUDGET_ENV = "LOCALMEM_DOCTOR_BUDGET"  # doctor --memory-budget, for the child process


def check_flash_budget(rng: np.random.Generator) -> tuple[bool, str]:
    """The flash engine under a memory budget (doctor --memory-budget, default 60%): its
    plan, and a reply that must be the dense engine's, token for token."""
    from localmem.llm import FlashEngine

    budget = os.environ.get(BUDGET_ENV) or "60%"
    q = [{"role": "user", "content": "Say hello."}]
    with FlashEngine(n_ctx=512) as dense:
        want = "".join(dense.generate(q, max_tokens=8, temperature=0))
        least = dense.least_budget / dense.weight_bytes
    with FlashEngine(n_ctx=512, memory_budget=budget) as e:
        got = "".join(e.generate(q, max_tokens=8, temperature=0))
        st = e.last_stats
        plan = e.plan_summary()
    return got == want, (
        f"at {budget}: {plan}; {st.generation_tokens_per_s:.0f} tok/s, reply "
        f"{'identical to' if got == want else 'DIFFERENT from'} dense; least budget "
        f"{least:.0%} of the weights"
    )


def _disk_dir() -> str | None:
    """A temporary directory on the disk that holds the store (fsync on tmpfs is free)."""
    parent = default_store_path().parent
    return str(parent) if parent.is_dir() else None


def store_summary(path: Path) -> str:
    """One line about the user's store, opened without creating it."""
    from localmem import keys
    from localmem.store import Store, keyfile, unlock

    if not (path / "MANIFEST").exists():
        return "(not created yet)"
    try:
        info = keyfile.describe(path)  # no secret read: store_key below unlocks, once
        enc = "plain files (not encrypted)"
        if info is not None:
            enc = f"encrypted ({info['cipher']}, key held by {keys.held_by(info)})"
        with Store.open(path, create=False, lock_timeout=5,
                        key=unlock.store_key(path, None, create=False)) as s:  # fmt: skip
            st = s.stats()
    except Exception as e:  # doctor reports, it does not stop
        return f"CANNOT OPEN: {type(e).__name__}: {e}"
    repairs = f"; repaired on open: {st['repairs']}" if st["repairs"] else ""
    return (
        f"{st['items']:,} items, LSN {st['last_lsn']:,}, log {st['wal']['bytes'] / 1e6:.1f} MB, "
        f"arena {st['arena_bytes'] / 1e6:.1f} MB; {enc}{repairs}"
    )


CHECKS: list[tuple[str, Callable[[np.random.Generator], tuple[bool, str]]]] = [
    ("kernels", selfcheck.kernels),
    ("search", selfcheck.search),
    ("index file", selfcheck.index_file),
    ("crc32c", selfcheck.crc),
    ("store", lambda rng: selfcheck.store(rng, _disk_dir())),
    ("llama.cpp", check_llama_build),
    ("chat model", check_chat_model),
    ("flash plan", check_flash_budget),
    ("embeddings", embed.self_check),
]


def _crash_advice(name: str) -> str:
    from localmem.llm import probe

    if name == "flash plan":
        return "LOCALMEM_KERNEL=scalar runs the flash engine's portable kernels"
    if name in ("llama.cpp", "chat model"):
        return probe.crash_advice()
    if name in ("kernels", "search", "index file"):
        return (
            "LOCALMEM_KERNEL=scalar runs the portable kernel; please report this with the "
            "output of localmem doctor"
        )
    return "please report this with the output of localmem doctor"


def run_checks(on_result: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in a child process that reports each as it ends: a check that crashes
    in native code (an illegal instruction in a library compiled for another CPU, say) kills
    the child, not the doctor, and fails with the signal and the fix; a new child runs the
    checks after it."""
    from localmem.llm.probe import describe_signal

    names = [name for name, _ in CHECKS]
    results: list[Check] = []

    def done(c: Check) -> None:
        names.remove(c.name)
        results.append(c)
        if on_result:
            on_result(c)

    while names:
        t0 = time.perf_counter()
        # stderr to a file: a pipe could fill up while stdout is being read.
        with tempfile.TemporaryFile(mode="w+") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "localmem.doctor", *names],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    c = Check(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a library's own output
                if c.name in names:
                    done(c)
                    t0 = time.perf_counter()
            rc = proc.wait()
            errors.seek(0)
            last = errors.read().strip().splitlines()[-1:]
        if not names:
            break
        what = f"crashed with {describe_signal(-rc)}" if rc < 0 else f"exited with {rc}"
        why = f": {last[0]}" if last and rc >= 0 else ""
        done(Check(names[0], False, f"{what}{why}; {_crash_advice(names[0])}",
                   time.perf_counter() - t0))  # fmt: skip
    return results


def _run_in_child(names: list[str]) -> int:
    """In the child: the named checks, one JSON line each as it ends."""
    rng = np.random.default_rng(7)
    funcs = dict(CHECKS)
    for name in names:
        t0 = time.perf_counter()
        try:
            ok, detail = funcs[name](rng)
        except Exception as e:  # a self-check reports every failure, it does not stop
            ok, detail = False, f"{type(e).__name__}: {e}"
        c = Check(name, ok, detail, time.perf_counter() - t0)
        print(json.dumps(c.__dict__), flush=True)
    return 0


def report(echo: Callable[[str], None] = print) -> bool:
    """Print the environment and the self-check; True when every check passed."""
    info = build_info()
    store = default_store_path()
    echo(f"localmem {info['version']}")
    echo(f"  python     {sys.version.split()[0]} ({sys.executable})")
    echo(f"  kernel     {info['kernel']}  (available: {', '.join(info['kernels_available'])})")
    echo(f"  cpu        {info['cpu_features'] or 'baseline'}; {info['hardware_threads']} threads")
    native = "  [-march=native]" if info["march_native"] else ""
    echo(f"  compiler   {info.get('compiler', '?')}{native}")
    if info["kernel_override_error"]:
        echo(f"  warning    {info['kernel_override_error']}")
    echo(f"  store      {store}  {store_summary(store)}")
    echo("self-check (in a child process: a native crash fails its check, not the doctor)")

    def show(c: Check) -> None:
        echo(f"  {'ok  ' if c.ok else 'FAIL'} {c.name:<11} {c.detail}  ({c.seconds * 1000:.0f} ms)")

    results = run_checks(show)
    ok = all(c.ok for c in results) and len(results) == len(CHECKS)
    echo("all checks passed" if ok else "SELF-CHECK FAILED")
    return ok


if __name__ == "__main__":
    sys.exit(_run_in_child(sys.argv[1:]))
