"""A new user's first two sittings with ``localmem chat`` in a real terminal (tmux), with the
embedded model (SmolLM2-135M) and embedder, on a fresh store in a fresh home.

Sitting 1 tells three facts, one message at a time, each reply read to its end; Ctrl+Q.
Sitting 2 reopens the chat: the first conversation must be on screen again (scrollback);
/new starts another conversation (an empty view); each fact is asked about and must be
shown, by the reply or its "from memory" block, or else by the memory inspector (F2).
Then, on the store the chat left: the assistant's replies must never come back as what the
user said — the "you are not allergic to peanuts" kind of contradiction, a reply recalled
into another conversation's prompt. So for each of sitting 2's questions, the recall the
assistant makes (``Memory.recall``, replies left out by default) holds no reply, and the
memory note the real assistant places in its prompt holds none of sitting 1's replies.

    python bench/newuser.py --check      # needs tmux (~15 s, up to a minute on a busy machine)
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _checks import print_checks  # bench/, on sys.path when a bench runs as a script
from _tmux import Terminal, bench_args

TERM = Terminal("localmem-newuser")
FACTS = [
    ("I am allergic to peanuts.", "What am I allergic to?", "peanut"),
    ("My sister is called Ana and she lives in Porto.", "Where does my sister live?", "porto"),
    ("I work as a nurse at the city hospital.", "What is my job?", "nurse"),
]
WRITING = "writing"  # the status bar's word, and the subtitle, of a reply being written
SPEED = re.compile(r"\d+ tok/s, first in \d+ ms")  # the status bar's word on the last reply


def launch(env: dict[str, str]) -> None:
    """Starts ``localmem chat`` as a user would, in a terminal tall enough for a short
    conversation, and waits until the model has loaded."""
    exe = Path(sys.executable).with_name("localmem")
    setenv = " ".join(f"{k}={v}" for k, v in env.items())
    TERM.start(f"env {setenv} {exe} chat", 120, 60)
    TERM.wait_for("(ctx ")


def quit_chat() -> None:
    TERM.keys("C-q")
    t0 = time.perf_counter()
    while TERM.alive() and time.perf_counter() - t0 < 20:
        time.sleep(0.1)
    if TERM.alive():
        raise SystemExit("the chat did not quit on Ctrl+Q within 20 s:\n" + TERM.screen())


def speed(s: str) -> str:
    m = SPEED.search(s)
    return m.group(0) if m else ""


def say(text: str, timeout: float = 120) -> str:
    """Sends a message and waits for the whole reply: its "writing…" mark seen and gone, or
    the status bar's speed changed (a reply too quick to be caught mid-way); the screen."""
    before, seen = speed(TERM.screen()), False
    TERM.type_line(text)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        s = TERM.screen()
        writing = WRITING in s
        seen = seen or writing
        if not writing and (seen or speed(s) not in ("", before)):
            return s
        time.sleep(0.02)
    raise SystemExit(f"no whole reply to {text!r} after {timeout} s:\n{TERM.screen()}")


def boxes(s: str, title: str) -> list[str]:
    """The texts of the boxes titled ``title`` ("you", "assistant", "from memory") on a
    captured screen, top to bottom (a box cut by the top of the view is left out)."""
    out: list[str] = []
    cur: list[str] | None = None
    for line in s.splitlines():
        if "╭" in line and f" {title} " in line:
            cur = []
            continue
        if cur is not None and "╰" in line:
            out.append(" ".join(cur).strip())
            cur = None
        elif cur is not None:
            cur.append(line.strip(" │▏▕"))
    return [" ".join(x.split()) for x in out]


def after(s: str, text: str) -> str:
    """What the screen shows below the last line holding ``text``."""
    lines = s.splitlines()
    at = max((i for i, line in enumerate(lines) if text in line), default=-1)
    return "\n".join(lines[at + 1 :])


@dataclass
class Findings:
    s1: str | None  # sitting 1's conversation
    s2: str | None  # sitting 2's, after /new
    replies1: list[str]  # sitting 1's replies, as stored
    whole1: int  # of which written to their end
    recalled_replies: list[str]  # replies among the hits of sitting 2's questions
    in_notes: list[str]  # replies in the notes the assistant places for them
    notes: list[str]


def store_checks(store: Path, snap: Path, questions: list[str]) -> Findings:
    """On the store the chat left: the two conversations. On ``snap``, the store as sitting
    1 left it (what sitting 2's questions met: not yet themselves): the replies recall
    returns for them, and sitting 1's replies in the notes the real assistant places."""
    from localmem import Memory
    from localmem.assistant import Assistant
    from localmem.llm import open_engine

    with Memory.open(store) as mem:
        said = [m for m in mem.list(kind="episodic", limit=1000) if "user" in m.tags]
        s2 = next((m.session for m in said if m.text == questions[0]), None)
    with Memory.open(snap) as mem:
        turns = [m for m in mem.list(kind="episodic", limit=1000) if m.source == "chat"]
        said = [m for m in turns if "user" in m.tags]  # a reply may repeat a fact word for word
        s1 = next((m.session for m in said if m.text == FACTS[0][0]), None)
        # What the user said, in any conversation: a reply that repeats it word for word is
        # not told apart from it by its text, only by being a reply.
        own = {m.text.strip() for m in mem.list(limit=1000) if not m.is_reply}
        replies1 = [m.text.strip() for m in turns if m.session == s1 and m.is_reply]
        # A reply cut short (Ctrl+Q mid-reply, or a stop) is stored tagged "cancelled".
        whole1 = sum(
            1 for m in turns if m.session == s1 and m.is_reply and "cancelled" not in m.tags
        )
        recalled_replies = []
        for q in questions:
            recalled_replies += [h.memory.text for h in mem.recall(q, k=8) if h.memory.is_reply]
        engine = open_engine()
        try:
            bot = Assistant(mem, engine, remember=False, max_tokens=48)
            in_notes, notes = [], []
            for q in questions:
                turn = bot.chat(q)
                turn.text()
                notes.append(turn.note)
                # The note is made of turn.memories: a reply among them is the failure; a
                # reply's words in the note that the user never said would be one too.
                in_notes += [h.memory.text for h in turn.memories if h.memory.is_reply]
                in_notes += [r for r in replies1 if r and r not in own and r in turn.note]
            bot.wait_ready()
        finally:
            engine.close()
    return Findings(s1, s2, replies1, whole1, recalled_replies, in_notes, notes)


def main() -> int:
    args = bench_args(__doc__)
    if args is None:
        return 1
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="newuser-") as d:
        home, store = Path(d) / "home", Path(d) / "store"
        env = {
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "LOCALMEM_STORE": str(store),
        }
        os.environ.update(env)  # the checks on the store after the run: the same home
        # Sitting 1: three facts, each reply read to its end.
        launch(env)
        for fact, _, _ in FACTS:
            say(fact)
        s1_screen = TERM.screen()
        quit_chat()
        snap = Path(d) / "after-sitting-1"
        shutil.copytree(store, snap)  # the chat has exited: a consistent copy
        # Sitting 2: the conversation is back; /new; each fact asked about.
        launch(env)
        back = TERM.wait_for("goes on (")
        facts_back = sum(fact in " ".join(boxes(back, "you")) for fact, _, _ in FACTS)
        replies_back = len(boxes(back, "assistant"))
        TERM.type_line("/new")
        TERM.wait_for("A new conversation")
        t0 = time.perf_counter()  # the old messages go as the notice comes: a frame or two
        while any(fact in TERM.screen() for fact, _, _ in FACTS) and time.perf_counter() - t0 < 5:
            time.sleep(0.05)
        new_view = not any(fact in TERM.screen() for fact, _, _ in FACTS)
        found: list[str] = []
        answers: list[str] = []
        for _, question, key in FACTS:
            s = say(question)
            below = after(s, question)
            answers.append(" ".join(boxes(below, "assistant")))
            if key in below.lower():
                found.append("chat")
                continue
            TERM.keys("F2")
            ins = TERM.wait_for("recalled for")
            found.append("inspector" if key in ins.lower() else "missing")
            TERM.keys("F2")  # closed: the message box has the focus
            time.sleep(0.3)
        quit_chat()
        ui_seconds = time.perf_counter() - t_start
        st = store_checks(store, snap, [q for _, q, _ in FACTS])
    total = time.perf_counter() - t_start

    print("sitting 1, last screen:\n" + "\n".join(x for x in s1_screen.splitlines() if x.strip()))
    print("\nsitting 2, reopened:\n" + "\n".join(x for x in back.splitlines() if x.strip()))
    print(f"\nconversations: sitting 1 {st.s1}, sitting 2 after /new {st.s2}")
    for r in st.replies1:
        print(f"  sitting 1 reply: {r[:100]!r}")
    for (_, q, key), where, a in zip(FACTS, found, answers, strict=True):
        print(f"  asked {q!r}: {key!r} shown by the {where}; reply {a[:80]!r}")
    for q, note in zip([q for _, q, _ in FACTS], st.notes, strict=True):
        print(f"  note for {q!r}: {' | '.join(note.splitlines()[1:])[:140]!r}")
    print(f"UI part {ui_seconds:.0f} s, store checks {total - ui_seconds:.0f} s")
    n = len(FACTS)
    shown = n - found.count("missing")
    checks = [
        ("sitting 1: replies written to their end (of 3)", float(st.whole1), ">=", float(n)),
        ("sitting 2: its facts back on screen (of 3)", float(facts_back), ">=", float(n)),
        ("sitting 2: its replies back on screen (of 3)", float(replies_back), ">=", float(n)),
        ("/new: empty view, another conversation", float(new_view and st.s1 != st.s2), ">=", 1),
        ("facts shown when asked (of 3)", float(shown), ">=", float(n)),
        ("  of which by the reply or its memory block", float(found.count("chat")), "", None),
        ("replies in recall of sitting 2's questions", float(len(st.recalled_replies)), "<=", 0),
        ("sitting 1 replies in sitting 2's notes", float(len(st.in_notes)), "<=", 0.0),
        ("total time (s)", total, "<=", 300.0),
    ]
    miss = print_checks(checks, 48)
    return 1 if (args.check and miss) else 0


if __name__ == "__main__":
    os.environ.pop("TMUX", None)
    sys.exit(main())
