"""The must-show conversation with the real parts: the embedded GGUF model, the real ONNX
embedder, a store on disk. Session 1 states three facts; session 2, in a new process, asks
about each: the prompt must carry each fact (asserted on the prompt, not on the 135M
model's wording) and the model must stream a non-empty reply."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from localmem.cli import main

SESSION = """
import json, sys
from localmem import Memory
from localmem.assistant import Assistant
from localmem.llm import open_engine

with Memory.open(sys.argv[1]) as mem:
    engine = open_engine(engine=sys.argv[3])
    bot = Assistant(mem, engine, session=sys.argv[2], max_tokens=48, temperature=0)
    for message in sys.argv[4:]:
        turn = bot.chat(message)
        pieces = list(turn)
        print(json.dumps({
            "note": turn.note, "pieces": len(pieces), "reply": turn.reply,
            "facts": [f.text for f in turn.facts], "reused": turn.stats.reused_tokens,
            "prompt": turn.stats.prompt_tokens,
        }))
"""

FACTS = ["My sister is called Ana.", "I am allergic to nuts.", "I prefer short answers."]
QUESTIONS = [
    ("What is my sister called?", "My sister is called Ana."),
    ("Am I allergic to anything?", "I am allergic to nuts."),
    ("How do I like my answers?", "I prefer short answers."),
]


def run_session(store, session, messages, engine="llama"):
    out = subprocess.run(
        [sys.executable, "-c", SESSION, str(store), session, engine, *messages],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("engine", ["llama", "flash"])
def test_facts_from_session_one_are_in_session_two_prompts(tmp_path, engine):
    store = tmp_path / "store"
    one = run_session(store, "s1", FACTS, engine)
    assert [t["facts"] for t in one] == [[f] for f in FACTS]
    assert all(t["reply"].strip() for t in one)
    assert one[2]["reused"] > 0  # turn 3 reused turns 1-2 from the KV cache
    two = run_session(store, "s2", [q for q, _ in QUESTIONS], engine)
    for (q, fact), t in zip(QUESTIONS, two, strict=True):
        assert fact in t["note"], f"{q!r}: the prompt's memory note lacks {fact!r}:\n{t['note']}"
        assert t["pieces"] > 0 and t["reply"].strip()


@pytest.mark.parametrize("engine", ["llama", "flash"])
def test_ask_answers_from_the_command_line_with_its_memories(tmp_path, monkeypatch, engine):
    monkeypatch.setenv("LOCALMEM_STORE", str(tmp_path / "s"))
    first = ["ask", "My brother Tom lives in Oslo.", "--temperature", "0", "--engine", engine]
    r = CliRunner().invoke(main, first)
    assert r.exit_code == 0, r.output
    assert r.output.strip()
    r = CliRunner().invoke(
        main,
        ["ask", "Where does my brother live?", "--show-memories", "--max-tokens", "32",
         "--engine", engine, "--stats"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    head, _, reply = r.output.partition("\n\n")
    assert head.startswith("recalled ") and "My brother Tom lives in Oslo." in head
    assert reply.strip()
    cls = {"llama": "LlamaCppEngine", "flash": "FlashEngine"}[engine]
    assert f"({cls}): load" in r.output  # --stats names the engine that answered


def test_ask_with_a_bad_model_path_says_how_to_fix_it(tmp_path):
    r = CliRunner().invoke(main, ["ask", "hello", "--model", str(tmp_path / "missing.gguf")])
    assert r.exit_code == 1 and "no model file at" in r.output and "Traceback" not in r.output
    (tmp_path / "x.gguf").write_bytes(b"\0" * 100)
    r = CliRunner().invoke(main, ["ask", "hello", "--model", str(tmp_path / "x.gguf")])
    assert r.exit_code == 1 and "not a GGUF model" in r.output
