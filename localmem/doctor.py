"""``localmem doctor``: what this install runs on, and a quick self-check of the core."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localmem import _core, build_info
from localmem.errors import CorruptFileError
from localmem.index import Int8Index
from localmem.paths import default_store_path
from localmem.testing import cluster_centres, clustered_vectors, exact_top_k, recall_at_k

KERNEL_DIMS = (1, 3, 15, 16, 17, 97, 384, 768, 1023)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


def check_kernels(rng: np.random.Generator) -> tuple[bool, str]:
    kernels = _core.available_kernels()
    for dim in KERNEL_DIMS:
        q = rng.integers(-127, 128, (5, dim), dtype=np.int8)
        d = rng.integers(-127, 128, (37, dim), dtype=np.int8)
        qs = rng.random(5, dtype=np.float32)
        ds = rng.random(37, dtype=np.float32)
        ref = _core.score_matrix(q, qs, d, ds, "scalar")
        for k in kernels:
            if not np.array_equal(_core.score_matrix(q, qs, d, ds, k), ref):
                return False, f"kernel {k} differs from scalar at dim {dim}"
    return True, f"{len(kernels)} kernels equal scalar on {len(KERNEL_DIMS)} dims"


def check_search(rng: np.random.Generator) -> tuple[bool, str]:
    n, dim, nq, k = 5000, 384, 100, 10
    centres = cluster_centres(64, dim)
    x = clustered_vectors(n, dim, centres=centres, seed=rng)
    q = clustered_vectors(nq, dim, centres=centres, seed=rng)
    index = Int8Index(dim)
    index.add(np.arange(n), x)
    ids, _ = index.search(q, k)
    recall = recall_at_k(ids, exact_top_k(q, x, k))
    ok = recall >= 0.95
    return ok, f"recall@10 = {recall:.3f} on {n:,} x {dim} against numpy float32"


def check_file(rng: np.random.Generator) -> tuple[bool, str]:
    x = clustered_vectors(1000, 64, clusters=16, seed=rng)
    index = Int8Index(64)
    index.add(np.arange(1000), x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.lmi"
        index.save(path)
        loaded = Int8Index.load(path)
        same = np.array_equal(index.search(x[:20], 5)[0], loaded.search(x[:20], 5)[0])
        del loaded
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            Int8Index.load(path)
            refused = False
        except CorruptFileError:
            refused = True
    return same and refused, "save/load round trip equal" + (
        ", damaged file refused" if refused else ", damaged file NOT detected"
    )


def check_crc(rng: np.random.Generator) -> tuple[bool, str]:
    data = rng.integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    ok = _core.crc32c(data) == _core.crc32c(data, portable=True) and (
        _core.crc32c(b"123456789") == 0xE3069283
    )
    return ok, "hardware crc32c equals the table version and the standard check value"


def check_store(rng: np.random.Generator) -> tuple[bool, str]:
    """Writes a small store, tears its log like a crash would, reopens it, and times the
    disk's fdatasync (the floor under every durable commit)."""
    from localmem.store import Store

    with tempfile.TemporaryDirectory(dir=_disk_dir()) as tmp:
        path = Path(tmp) / "store"
        vecs = rng.standard_normal((200, 16)).astype(np.float32)
        with Store.open(path, dim=16) as s:
            for i in range(100):
                s.put(i, f"item {i}", vector=vecs[i])
            s.checkpoint()
            s.put_many([(i, f"item {i}", None, vecs[i]) for i in range(100, 200)])
            tail = Path(s.stats()["wal"]["tail_segment"])
        with tail.open("ab") as f:
            f.write(b"\x99" * 37)  # a torn record
        quiet = logging.getLogger("localmem.store")
        quiet.disabled = True  # the repair below is expected: no warning on the console
        try:
            s = Store.open(path)
        finally:
            quiet.disabled = False
        with s:
            intact = len(s) == 200 and s.get(150).text == "item 150"
            found = s.search(vecs[42], 1)[0][0] == 42
            repaired = [r["part"] for r in s.recovery] == ["wal"]
        probe = Path(tmp) / "fsync-probe"
        times = []
        with probe.open("wb") as f:
            for _ in range(20):
                f.write(b"x" * 1024)
                f.flush()
                t0 = time.perf_counter()
                os.fdatasync(f.fileno())
                times.append(time.perf_counter() - t0)
    ok = intact and found and repaired
    return ok, (
        f"log + arena + checkpoint + torn-tail repair {'ok' if ok else 'FAILED'}; "
        f"disk fdatasync p50 {np.median(times) * 1e6:.0f} us"
    )


def check_embeddings(rng: np.random.Generator) -> tuple[bool, str]:
    """The embedded model: its files verified against the registry, loaded, and a paraphrase
    scored above an unrelated sentence."""
    from localmem.embed import OnnxEmbedder

    e = OnnxEmbedder()
    v = e.embed(["Caroline moved to Lisbon last May", "Where does Caroline live now?",
                 "The printer is out of toner"])  # fmt: skip
    related, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    texts = [f"sentence number {i} about the weather and the garden" for i in range(64)]
    t0 = time.perf_counter()
    e.embed(texts)
    rate = len(texts) / (time.perf_counter() - t0)
    ok = related > unrelated + 0.2 and v.shape[1] == e.dim
    return ok, (
        f"{e.model_id} (sha256 verified), dim {e.dim}: paraphrase {related:.2f} vs unrelated "
        f"{unrelated:.2f}; {rate:.0f} short texts/s"
    )


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
        least = int(dense._model.min_budget) / int(dense._model.weight_bytes)
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
    from localmem.store import Store

    if not (path / "MANIFEST").exists():
        return "(not created yet)"
    try:
        with Store.open(path, create=False, lock_timeout=5) as s:
            st = s.stats()
    except Exception as e:  # doctor reports, it does not stop
        return f"CANNOT OPEN: {type(e).__name__}: {e}"
    repairs = f"; repaired on open: {st['repairs']}" if st["repairs"] else ""
    return (
        f"{st['items']:,} items, LSN {st['last_lsn']:,}, log {st['wal']['bytes'] / 1e6:.1f} MB, "
        f"arena {st['arena_bytes'] / 1e6:.1f} MB{repairs}"
    )


CHECKS: list[tuple[str, Callable[[np.random.Generator], tuple[bool, str]]]] = [
    ("kernels", check_kernels),
    ("search", check_search),
    ("index file", check_file),
    ("crc32c", check_crc),
    ("store", check_store),
    ("llama.cpp", check_llama_build),
    ("chat model", check_chat_model),
    ("flash plan", check_flash_budget),
    ("embeddings", check_embeddings),
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
