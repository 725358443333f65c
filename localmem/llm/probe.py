"""Does the installed llama.cpp run on this CPU? Asked in a child process, once per build
and CPU.

llama-cpp-python compiles llama.cpp when it is installed, and by default for the machine
that compiles it (``GGML_NATIVE``: ``-march=native``). Such a build can die with SIGILL on
another CPU, or on the same CPU when a hypervisor does not run what the CPU reports (the AMX
matrix path of Intel Xeons was seen to do exactly that). A crash in native code cannot be
caught in the process that has it, so the first use of a llama.cpp build on a CPU is a
child process that loads the chat model and reads a prompt long enough to take the batched
path; its answer is kept in the cache dir under a key of the library files and the CPU, and
``open_engine`` falls back to the flash engine when it crashed.

``python -m localmem.llm.probe [MODEL]`` is that child: it prints one JSON line.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localmem.files import write_private
from localmem.registry import cache_dir

log = logging.getLogger("localmem.llm")

# How the README installs llama-cpp-python: a fixed, portable instruction set (x86-64-v3:
# AVX2, FMA, F16C, BMI2), never -march=native and never AMX (bench/README.md: the figures).
PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
REINSTALL = (
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" {sys.executable} -m pip install --no-cache-dir '
    "--force-reinstall --no-deps llama-cpp-python"
)
PROBE_TIMEOUT = 300.0  # seconds: loading a large user model from a cold disk included
_CACHE_FILE = "llama-probe.json"

# A prompt of some 200 tokens: read as one batch, as a conversation's prompt is, which is
# where llama.cpp picks its matrix kernels (the AMX path among them); a one-token decode
# alone would not reach them.
_PROMPT = (
    "Here are my notes from this week. On Monday the design review for the garden shed "
    "moved to Thursday because the timber arrived late. On Tuesday my sister Ana called "
    "from Lisbon: she starts a new job in May and wants to visit in June. On Wednesday I "
    "booked the car for its service, paid the water bill, and ordered a birthday present "
    "for my nephew, a red bicycle with a bell. On Thursday the review went well; we agreed "
    "on a green roof, two windows and a door facing south. On Friday I went hiking with my "
    "dog Rex in the hills north of town and found a quiet lake. In one sentence: what did "
    "I do on Friday?"
)


@dataclass(frozen=True)
class ProbeResult:
    """What the child reported. ``crashed``: it died of a signal (``signal``) or aborted;
    ``detail`` says what happened and, for a crash, how to fix it."""

    crashed: bool
    detail: str
    signal: int | None = None
    system_info: str = ""  # llama_print_system_info(): the features llama.cpp was built with
    seconds: float = 0.0
    cached: bool = False


def library_dir() -> Path | None:
    """``llama_cpp/lib`` of the installed llama-cpp-python (found without importing it)."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return lib if lib.is_dir() else None


def libraries() -> list[Path]:
    """The shared libraries llama-cpp-python loads (``libllama``, ``libggml*``)."""
    lib = library_dir()
    if lib is None:
        return []
    return sorted(p for p in lib.iterdir() if ".so" in p.name or p.suffix in (".dylib", ".dll"))


def cpu_flags() -> set[str] | None:
    """The instruction sets the kernel says this CPU runs (/proc/cpuinfo), None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_signature() -> str:
    """What identifies this CPU's instruction sets."""
    flags = cpu_flags()
    if flags is not None:
        return " ".join(sorted(flags))
    return f"{platform.machine()} {platform.processor()}"


def build_key() -> str:
    """Changes when llama.cpp is rebuilt or reinstalled, or the CPU is another."""
    h = hashlib.sha256(cpu_signature().encode())
    for p in libraries():
        st = p.stat()
        h.update(f"{p.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def describe_signal(sig: int) -> str:
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    what = {
        "SIGILL": "Illegal instruction: llama.cpp was compiled for a CPU with instructions "
        "this one (or its hypervisor) does not run",
        "SIGSEGV": "Segmentation fault",
        "SIGBUS": "Bus error",
        "SIGABRT": "Aborted",
        "SIGFPE": "Floating-point exception",
    }.get(name)
    return f"{name} ({what})" if what else name


def rebuild_advice() -> str:
    return f"rebuild llama-cpp-python portable: {REINSTALL}"


def crash_advice() -> str:
    return (
        "use --engine flash (localmem's own engine runs the same GGUF model), or "
        + rebuild_advice()
    )


_memo: dict[str, ProbeResult] = {}
_memo_lock = threading.Lock()


def probe(model: Path, *, refresh: bool = False, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """Whether llama.cpp crashes on this CPU loading ``model`` and reading a prompt, from a
    child process. A crash or a clean run is remembered for this build and CPU (in this
    process and in the cache dir); anything else (a timeout, an error the engine reports
    as an exception anyway) is not, and counts as no crash."""
    key = build_key()
    with _memo_lock:
        if not refresh:
            hit = _memo.get(key) or _read_cache(key)
            if hit is not None:
                _memo[key] = hit
                return hit
        result, definitive = _run_child(model, timeout)
        if definitive:
            _memo[key] = result
            _write_cache(key, result)
        return result


def _read_cache(key: str) -> ProbeResult | None:
    try:
        d = json.loads((cache_dir() / _CACHE_FILE).read_text()).get(key)
        return ProbeResult(**{**d, "cached": True}) if isinstance(d, dict) else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _write_cache(key: str, result: ProbeResult) -> None:
    path = cache_dir() / _CACHE_FILE
    try:
        try:
            entries = json.loads(path.read_text())
            entries = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            entries = {}
        entries = {k: v for k, v in list(entries.items())[-7:]}  # a few builds, not forever
        entries[key] = {k: v for k, v in asdict(result).items() if k != "cached"}
        write_private(path, json.dumps(entries).encode())
    except OSError as e:
        log.debug("cannot keep the llama.cpp probe result in %s: %s", path, e)


def _run_child(model: Path, timeout: float) -> tuple[ProbeResult, bool]:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "localmem.llm.probe", str(model)]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"no answer in {timeout:.0f} s", seconds=timeout), False
    except OSError as e:
        return ProbeResult(False, f"cannot start the check: {e}"), False
    seconds = time.perf_counter() - t0
    report: dict[str, Any] = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                report = json.loads(line)
    info = str(report.get("system_info", ""))
    if out.returncode < 0:
        sig = -out.returncode
        detail = f"llama.cpp crashed with {describe_signal(sig)}"
        return ProbeResult(True, detail, sig, info, seconds), True
    if report.get("ok"):
        return ProbeResult(False, str(report.get("detail", "ran")), None, info, seconds), True
    # An exception (a damaged model, say) is the engine's own clear error, not a crash.
    error = report.get("error") or (out.stderr.strip().splitlines() or ["?"])[-1]
    return ProbeResult(False, f"the check failed without crashing: {error}"), False


def system_features(info: str) -> list[str]:
    """The features ``llama_print_system_info()`` says are on (``AVX2 = 1``)."""
    return [m.group(1) for m in re.finditer(r"(\w+) = 1\b", info)]


# llama.cpp's name of an instruction set -> the kernel's (/proc/cpuinfo flags).
_CPU_FLAG = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "AVX_VNNI": "avx_vnni",
    "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2", "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8", "NEON": "asimd", "DOTPROD": "asimddp", "SVE": "sve",
    "MATMUL_INT8": "i8mm", "SME": "sme",
}  # fmt: skip


@dataclass(frozen=True)
class LlamaBuild:
    """The installed llama.cpp: its version, the CPU features it was compiled with, and the
    ``GGML_*`` options its CMake build recorded (``ggml-config.cmake``), where installed."""

    version: str
    features: list[str]
    options: dict[str, str]


def recorded_options() -> dict[str, str]:
    """The ``GGML_*`` options of the build, from the ``lib/cmake/ggml/ggml-config.cmake``
    that llama.cpp's install puts in site-packages beside ``llama_cpp``; empty if none."""
    lib = library_dir()
    cfg = lib.parent.parent / "lib" / "cmake" / "ggml" / "ggml-config.cmake" if lib else None
    try:
        text = cfg.read_text(errors="replace") if cfg else ""
    except OSError:
        return {}
    return dict(re.findall(r'^set\((GGML_[A-Z0-9_]+) "([^"]*)"\)', text, re.MULTILINE))


def installed_build() -> LlamaBuild | None:
    """What llama-cpp-python was built with (imports it: a child process's work)."""
    try:
        import llama_cpp
    except ImportError:
        return None
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    version = str(getattr(llama_cpp, "__version__", "?"))
    return LlamaBuild(version, system_features(info), recorded_options())


def build_problems(build: LlamaBuild) -> list[str]:
    """Why this llama.cpp build may not run here or on the user's next machine."""
    problems = []
    if build.options.get("GGML_NATIVE", "").upper() in ("ON", "1", "TRUE", "YES"):
        problems.append("built with -march=native (GGML_NATIVE=ON), for the CPU that compiled it")
    amx = [f for f in build.features if f.startswith("AMX")]
    if amx:
        problems.append(
            f"built with {', '.join(amx)}, whose matrix path was seen to crash (SIGILL, "
            "SIGSEGV) on Xeons under a hypervisor"
        )
    flags = cpu_flags()
    missing = [f for f in build.features if f in _CPU_FLAG and _CPU_FLAG[f] not in (flags or ())]
    if missing and flags is not None:
        problems.append(f"uses {', '.join(missing)}, which this CPU does not have")
    return problems


def _child(model: str) -> int:
    """In the child: load the model, read ``_PROMPT`` as one batch, write a few tokens."""
    from localmem.llm.llamacpp import LlamaCppEngine

    report: dict[str, Any] = {}
    try:
        import llama_cpp

        report["system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace")
        print(json.dumps(report), flush=True)  # said before anything that may crash
        with LlamaCppEngine(model, n_ctx=512) as e:
            reply = "".join(
                e.generate([{"role": "user", "content": _PROMPT}], max_tokens=4, temperature=0)
            )
            st = e.last_stats
        report.update(
            ok=True,
            detail=f"read a {st.prompt_tokens}-token prompt and wrote {st.generated_tokens} "
            f"tokens ({reply.strip()[:30]!r})",
        )
    except Exception as e:  # reported to the parent, which decides
        report.update(ok=False, error=f"{type(e).__name__}: {e}")
    print(json.dumps(report), flush=True)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m localmem.llm.probe MODEL.gguf", file=sys.stderr)
        sys.exit(2)
    sys.exit(_child(sys.argv[1]))
