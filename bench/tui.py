"""The terminal chat as a new user meets it: ``localmem chat`` in a real terminal (tmux),
typed into with send-keys and read back with capture-pane.

Measures the first paint (launch to the footer on screen, the model still loading behind
it; median of 3 launches) and checks, across two runs on one fresh store: a fact told in run
1 streams a reply (the assistant's box is seen part-written, then longer), run 2's question
about it is answered with the fact among the memories the inspector (F2) lists.

    python bench/tui.py --check      # needs tmux (~1 minute)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _checks import print_checks  # bench/, on sys.path when a bench runs as a script
from _tmux import Terminal, bench_args

TERM = Terminal("localmem-bench")
FACT = "My sister is called Ana and she lives in Porto."


def launch(store: Path) -> float:
    """Starts the chat; returns the seconds until its footer is painted."""
    exe = Path(sys.executable).with_name("localmem")
    t0 = time.perf_counter()
    TERM.start(f"env LOCALMEM_STORE={store} {exe} chat", 110, 32)
    while time.perf_counter() - t0 < 30:
        if "Quit" in TERM.screen():
            return time.perf_counter() - t0
        time.sleep(0.01)
    raise SystemExit("the chat did not paint within 30 s:\n" + TERM.screen())


def assistant_text(s: str) -> str:
    """The assistant box's text on a captured screen."""
    lines, on = [], False
    for line in s.splitlines():
        if "assistant" in line and "╭" in line:
            on = True
            continue
        if on and "╰" in line:
            break
        if on:
            lines.append(line.strip(" │▏"))
    return " ".join(x for x in lines if x).strip()


def main() -> int:
    args = bench_args(__doc__)
    if args is None:
        return 1
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tui-") as d:
        store = Path(d) / "store"
        paints = []
        for _ in range(3):
            paints.append(launch(store))
            TERM.keys("C-q")
            time.sleep(0.5)
        # Run 1: tell a fact; watch the reply stream.
        launch(store)
        TERM.wait_for("(ctx ")  # the model has loaded
        TERM.keys("-l", FACT)
        TERM.keys("Enter")
        seen: list[str] = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 60:
            s = TERM.screen()
            a = assistant_text(s)
            if a and (not seen or a != seen[-1]):
                seen.append(a)
            if "tok/s" in s:
                break
            time.sleep(0.01)
        final = assistant_text(TERM.screen())
        streamed = sum(1 for a in seen if a and a != final)
        TERM.keys("C-q")
        time.sleep(1.0)
        # Run 2: ask about it; the inspector lists what was recalled.
        launch(store)
        TERM.wait_for("(ctx ")
        TERM.keys("-l", "Where does my sister live?")
        TERM.keys("Enter")
        TERM.wait_for("tok/s")
        TERM.keys("F2")
        s2 = TERM.wait_for("recalled for")
        recalled = "sister is called Ana" in s2 and "Porto" in s2
        TERM.keys("C-q")
        time.sleep(0.5)
        subprocess.run(["tmux", "kill-session", "-t", TERM.session], capture_output=True)
    print(f"first paint, 3 launches: {', '.join(f'{p:.2f}' for p in paints)} s")
    print(f"run 1 reply seen part-written {streamed} times before it ended: {final[:80]!r}")
    print("run 2 inspector:\n" + "\n".join(x for x in s2.splitlines() if x.strip())[:2000])
    checks = [
        ("first paint, median of 3 launches (s)", statistics.median(paints), "<=", 1.5),
        ("reply states seen while streaming", float(streamed), ">=", 2.0),
        ("fact from run 1 listed by run 2's inspector", float(recalled), ">=", 1.0),
    ]
    miss = print_checks(checks, 46)
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    os.environ.pop("TMUX", None)
    sys.exit(main())
