"""tmux as the terminal of the chat benches (tui.py, newuser.py): a session of a given size
runs ``localmem chat`` as a user would start it; the benches type into it with send-keys and
read it back with capture-pane."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path


class Terminal:
    def __init__(self, session: str) -> None:
        self.session = session

    def run(self, *args: str) -> str:
        """A tmux command; its output."""
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout

    def start(self, command: str, width: int, height: int) -> None:
        """``command`` in a new session of this name (an old one is ended first)."""
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)
        self.run("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                 command)  # fmt: skip

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def alive(self) -> bool:
        ran = subprocess.run(["tmux", "has-session", "-t", self.session], capture_output=True)
        return ran.returncode == 0

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The screen once ``text`` is on it; SystemExit with the screen after ``timeout``."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            s = self.screen()
            if text in s:
                return s
            time.sleep(0.05)
        raise SystemExit(f"{text!r} not on screen after {timeout} s:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def type_line(self, text: str) -> None:
        """``text`` typed as it is, then Enter."""
        self.keys("-l", text)
        self.keys("Enter")


def bench_args(doc: str | None) -> argparse.Namespace | None:
    """The options of a chat bench (``--check``, ``--dir`` for its temporary files, made
    if needed); None, said why, when tmux is not there."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--dir", default="/work/.benchtmp")
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed (apt-get install tmux)")
        return None
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    return args
