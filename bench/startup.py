"""How fast the command line starts, and what ``import localmem`` loads (issue 24).

``localmem --help`` should cost the interpreter and click, not the native core, numpy,
SQLite and onnxruntime: the package's names load on first use (PEP 562). The reference in the
same run is the same command with the package loaded eagerly, as ``localmem/__init__.py``
did before (Memory, Assistant and the native core imported with the package).

    python bench/startup.py            # 20 runs of each
    python bench/startup.py --check    # 10 runs of each; exits 1 if a target is missed
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("numpy", "apsw", "onnxruntime", "localmem._core", "tokenizers", "llama_cpp")
HELP = [sys.executable, "-m", "localmem", "--help"]
EAGER = [
    sys.executable,
    "-c",
    "import sys, localmem.memory, localmem.assistant, localmem.store.index; "
    "from localmem.cli import main; sys.argv = ['localmem', '--help']; main()",
]


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def loaded(args: list[str]) -> set[str]:
    """The modules a Python run imports (from -X importtime), of those in HEAVY."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", *args], check=True, capture_output=True, text=True
    ).stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in out.splitlines() if "|" in line}
    return {h for h in HEAVY if any(n == h or n.startswith(h + ".") for n in names)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="10 runs each; exit 1 on a miss")
    ap.add_argument("--runs", type=int, default=None)
    args = ap.parse_args()
    runs = args.runs or (10 if args.check else 20)
    wall(HELP), wall(EAGER)  # the page cache warm for both ("cold-ish": fresh processes)
    lazy_t, eager_t = [], []
    for _ in range(runs):  # interleaved: a noisy neighbour hits both alike
        lazy_t.append(wall(HELP))
        eager_t.append(wall(EAGER))
    lazy, eager = statistics.median(lazy_t), statistics.median(eager_t)
    on_import = loaded(["-c", "import localmem"])
    on_help = loaded(["-m", "localmem", "--help"])
    print(f"localmem --help, median of {runs} fresh processes:")
    print(f"  lazy package (as shipped)      {lazy * 1000:7.1f} ms")
    print(f"  package loaded eagerly          {eager * 1000:7.1f} ms")
    print(f"import localmem loads: {sorted(on_import) or 'none of ' + ', '.join(HEAVY)}")
    print(f"localmem --help loads: {sorted(on_help) or 'none of ' + ', '.join(HEAVY)}")
    rows = [
        ("--help, lazy / eager", lazy / eager, "<= 0.5", lazy / eager <= 0.5),
        ("heavy modules on import localmem", len(on_import), "== 0", not on_import),
        ("heavy modules on localmem --help", len(on_help), "== 0", not on_help),
    ]
    print(f"\n{'figure':<36}{'measured':>10}  target")
    for name, value, target, ok in rows:
        print(f"{name:<36}{value:>10.3f}  {target:<8} {'ok' if ok else 'MISS'}")
    missed = [name for name, _, _, ok in rows if not ok]
    print("PASS" if not missed else f"FAIL: {', '.join(missed)}")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
