"""Everyday use as a new user meets it (issue 28): replies that must not become facts, store
paths that cannot hurt, the CLI's pin / unpin / edit / list, import --merge, and the
messages a mistake gets. The real SQLite, the real embedding model; the chat model where a
reply's words matter is a scripted one (the real one: bench/newuser.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from localmem import Assistant, Memory
from localmem.cli import main
from localmem.errors import InvalidArgumentError, StoreNotFoundError
from localmem.llm.engine import parse_budget
from localmem.testing import EchoEngine, HashEmbedder

FACT = "I am allergic to peanuts."
INVENTION = "I don't have any allergies or intolerances to nuts."


def cli(*args: str, input: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), input=input)
    return r.exit_code, r.output


# ---------------------------------------------------------------------- replies vs facts

_SESSION_1 = """
import sys
from localmem import Assistant, Memory
from localmem.testing import EchoEngine

class Inventing(EchoEngine):  # a small model's reply that contradicts the user
    def generate(self, messages, **kw):
        self.prompts.append(messages)
        yield {invention!r}

with Memory.open(sys.argv[1]) as mem:
    turn = Assistant(mem, Inventing(), session="s1").chat({fact!r})
    turn.text()
    print(turn.stored)
"""

_SESSION_2 = """
import json, sys
from localmem import Assistant, Memory
from localmem.testing import EchoEngine

with Memory.open(sys.argv[1]) as mem:
    engine = EchoEngine()
    notes = []
    for q in ("Do I have any allergies?", "Which nuts must I avoid?", "Am I allergic to nuts?"):
        turn = Assistant(mem, engine, session="s2", remember=False).chat(q)
        turn.text()
        notes.append(turn.note)
    recalled = [h.memory.text for h in mem.recall("allergies to nuts", k=10)]
    with_replies = [h.memory.text for h in mem.recall("allergies to nuts", k=10,
                                                       include_replies=True)]
    print(json.dumps({{"notes": notes, "recalled": recalled, "with_replies": with_replies}}))
"""


def _python(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_the_peanut_case_a_reply_of_one_process_never_reaches_the_next_ones_note(tmp_path):
    store = str(tmp_path / "store")
    _python(_SESSION_1.format(invention=INVENTION, fact=FACT), store)
    seen = json.loads(_python(_SESSION_2.format(), store))
    for note in seen["notes"]:
        assert FACT in note  # the user's own word is there...
        assert "allergies or intolerances" not in note  # ...the model's invention is not
    assert FACT in seen["recalled"] and INVENTION not in seen["recalled"]
    assert INVENTION in seen["with_replies"]  # kept as the conversation's context


def test_replies_that_repeat_the_users_words_do_not_crowd_the_user_out_of_recall(tmp_path):
    with Memory.open(tmp_path / "s", embedder=HashEmbedder(), forgetting=False) as mem:
        mem.remember_many([{"text": f"apples are tasty red fruit {i}", "kind": "episodic",
                            "tags": ["assistant"]} for i in range(400)])  # fmt: skip
        mine = {m.id for m in mem.remember_many(
            [{"text": f"apples are tasty red, I like them {i}"} for i in range(5)])}  # fmt: skip
        hits = mem.recall("apples are tasty red", k=5, floor=False)
        assert {h.memory.id for h in hits} == mine  # beyond the channels' 100 candidates
        assert all(
            h.memory.is_reply
            for h in mem.recall("apples tasty fruit", k=5, floor=False, include_replies=True)
        )
        # A reply written later, and a memory that stops being one, are seen at once.
        new = mem.remember("apples are tasty red, said the model", tags=["assistant"])
        assert new.id not in {h.memory.id for h in mem.recall("said the model", k=10)}
        mem.update(new.id, tags=["user"])
        assert new.id in {h.memory.id for h in mem.recall("said the model", k=10)}


def test_a_reply_never_supersedes_nor_absorbs_what_the_user_said(tmp_path):
    with Memory.open(tmp_path / "s", forgetting=False) as mem:
        user = mem.remember("Caroline lives in Porto", kind="fact")
        # A reply stated as a fact (an MCP client may store one so): newer, same subject.
        mem.remember("Caroline lives in Lisbon now", kind="fact", tags=["assistant"])
        same = mem.remember("Caroline lives in Porto", kind="fact", tags=["assistant"])
        mem.consolidate()
        kept = mem.get(user.id)
        assert kept.superseded_by is None and kept.tier == "hot"
        assert mem.get(same.id).merged_into is None  # not folded into the user's statement
        # Between two of the user's statements consolidation still works.
        newer = mem.remember("Caroline lives in Lisbon now", kind="fact")
        mem.consolidate()
        assert mem.get(user.id).superseded_by == newer.id


def test_no_store_replies_keeps_replies_out_by_flag_and_by_env(tmp_path, monkeypatch):
    with Memory.open(tmp_path / "s", embedder=HashEmbedder()) as mem:
        Assistant(mem, EchoEngine(), store_replies=False).chat("I like tea").text()
        monkeypatch.setenv("LOCALMEM_STORE_REPLIES", "0")
        Assistant(mem, EchoEngine()).chat("I like coffee").text()
        monkeypatch.setenv("LOCALMEM_STORE_REPLIES", "maybe")
        with pytest.raises(InvalidArgumentError, match="LOCALMEM_STORE_REPLIES"):
            Assistant(mem, EchoEngine())
        monkeypatch.delenv("LOCALMEM_STORE_REPLIES")
        Assistant(mem, EchoEngine()).chat("I like cocoa").text()
        replies = [m.text for m in mem.list(limit=100) if m.is_reply]
        assert replies == ["echo: I like cocoa"]


def test_ask_no_store_replies_with_the_real_model(tmp_path):
    store = str(tmp_path / "s")
    code, out = cli("ask", FACT, "--no-store-replies", "--max-tokens", "8", "--store", store)
    assert code == 0, out
    with Memory.open(store) as mem:
        items = mem.list(limit=50)
        assert any(m.text == FACT for m in items)
        assert not any(m.is_reply for m in items)


def test_a_file_or_a_chatgpt_title_named_assistant_does_not_make_replies(tmp_path):
    from localmem.portable import import_file

    notes = tmp_path / "assistant.md"
    notes.write_text("I keep my passport in the top drawer.")
    convo = [{"id": "c1", "title": "assistant", "mapping": {"n": {"message": {
        "author": {"role": "user"}, "content": {"parts": ["My bike is blue."]},
        "create_time": 1700000000}}}}]  # fmt: skip
    (tmp_path / "conversations.json").write_text(json.dumps(convo))
    with Memory.open(tmp_path / "s") as mem:
        import_file(mem, notes)
        import_file(mem, tmp_path / "conversations.json")
        assert not any(m.is_reply for m in mem.list(limit=10))
        assert mem.recall("where is my passport?", k=1)[0].memory.text.startswith("I keep")


def test_a_one_question_ask_is_not_the_conversation_the_chat_goes_on_with(tmp_path):
    from localmem.tui.conversation import last_conversation

    with Memory.open(tmp_path / "s", embedder=HashEmbedder()) as mem:
        chat = Assistant(mem, EchoEngine(), read_ahead=False)
        chat.chat("hello there").text()
        ask = Assistant(mem, EchoEngine(), read_ahead=False,
                        session=Assistant.new_session_id().replace("chat-", "ask-", 1))  # fmt: skip
        ask.chat("a quick question").text()
        found = last_conversation(mem)
        assert found is not None and found[0] == chat.session
        assert [m.text for m in found[1]] == ["hello there", "echo: hello there"]


# ---------------------------------------------------------------------- store paths


def test_an_empty_store_path_never_turns_the_current_directory_into_a_store(tmp_path, monkeypatch):
    cwd = tmp_path / "repo"
    cwd.mkdir()
    (cwd / "README.md").write_text("mine")
    monkeypatch.chdir(cwd)
    for args in (["stats"], ["remember", "x"], ["list"], ["key", "status"]):
        code, out = cli(*args, "--store", "")
        assert code != 0 and "store path is empty" in out, (args, out)
    monkeypatch.setenv("LOCALMEM_STORE", "")  # empty: the default, not the current dir
    assert sorted(p.name for p in cwd.iterdir()) == ["README.md"]
    with pytest.raises(InvalidArgumentError, match="empty"):
        Memory.open("")


def test_a_directory_of_other_files_is_refused_and_left_untouched(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    for args in (["list"], ["remember", "x"], ["import", "-"]):
        code, out = cli(*args, "--store", str(other), input="hello")
        assert code == 1 and "is not a localmem store" in out and "cat.jpg" in out, out
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]
    # An empty directory may become a store; a store reopens.
    (tmp_path / "new").mkdir()
    assert cli("remember", "x", "--store", str(tmp_path / "new"))[0] == 0
    assert cli("list", "--store", str(tmp_path / "new"))[0] == 0


READERS = [["list"], ["recall", "anything"], ["stats"], ["export"], ["forget", "1"],
           ["pin", "1"], ["edit", "1", "x"], ["sync", "status"], ["sync"], ["repair"]]  # fmt: skip


@pytest.mark.parametrize("command", READERS)
def test_read_commands_never_create_a_store(tmp_path, command):
    where = tmp_path / "typo"
    code, out = cli(*command, "--store", str(where))
    assert code == 1
    assert f"no store at {where}; `localmem remember` creates one" in out
    assert not where.exists()
    with pytest.raises(StoreNotFoundError):
        Memory.open(where, create=False)


# ---------------------------------------------------------------------- pin, edit, list


def test_pin_unpin_edit_and_undo_from_the_cli(tmp_path):
    s = ["--store", str(tmp_path / "s")]
    cli("remember", "I live in Porto", *s)
    cli("remember", "A long note. " + "word " * 60 + "\nsecond line", *s)
    assert cli("pin", "1", *s) == (0, "#1 pinned\n")
    assert cli("pin", "1", *s) == (0, "#1 was already pinned\n")
    code, out = cli("list", *s)
    lines = out.splitlines()
    assert lines[1].startswith("#1* ") and lines[0].startswith("#2  ")  # pinned: marked
    assert len(lines) == 2 and lines[0].endswith("…") and len(lines[0]) <= 100  # one line
    code, out = cli("list", "--full", *s)
    assert "second line" in out and "word " * 60 in out
    assert cli("unpin", "1", *s)[1] == "#1 unpinned\n"
    assert cli("list", *s)[1].splitlines()[1].startswith("#1  ")
    code, out = cli("edit", "1", "I live in Lisbon", *s)
    assert code == 0 and "--undo" in out
    with Memory.open(tmp_path / "s") as mem:
        m = mem.get(1)
        assert m.text == "I live in Lisbon"
        assert [x["text"] for x in m.sources if "edited" in x] == ["I live in Porto"]
        assert mem.recall("Lisbon", k=1)[0].memory.id == 1  # embedded again
    code, out = cli("edit", "1", "--undo", *s)
    assert code == 0 and "back to: I live in Porto" in out
    code, out = cli("edit", "1", "--undo", *s)
    assert code == 1 and "never edited" in out
    code, out = cli("edit", "1", *s)
    assert code == 2 and "give the new TEXT" in out


def test_undo_edit_goes_back_only_to_the_edit_it_undoes(tmp_path):
    with Memory.open(tmp_path / "s", forgetting=False) as mem:
        m = mem.remember("I work at Microsoft", kind="fact")
        mem.update(m.id, text="I work at Google")
        mem.remember("I work at Google as an engineer", kind="fact")
        mem.consolidate()  # the longer duplicate is folded in: the text is no longer the edit's
        assert mem.get(m.id).text == "I work at Google as an engineer"
        with pytest.raises(InvalidArgumentError, match="changed since its last edit"):
            mem.undo_edit(m.id)
        assert mem.get(m.id).text == "I work at Google as an engineer"


VERSIONS = [{"edited": 1}, {"edited": 1, "text": 12}, {"edited": "x", "text": ""},
            {"edited": 1, "text": None}]  # fmt: skip


@pytest.mark.parametrize("entry", VERSIONS)
def test_a_version_entry_from_an_import_is_checked_before_undo_trusts_it(tmp_path, entry):
    with Memory.open(tmp_path / "a") as mem:
        mem.remember("I live in Lisbon")
        mem.update(1, text="I live in Porto")  # a real version entry, its "to" included
        _export(mem, tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    version = rec["meta"]["sources"][-1]
    version.pop("edited")
    version.pop("text")
    version.update(entry)  # then damaged, as a crafted file may be
    lines[1] = json.dumps(rec)
    import hashlib  # the export's last line: the sha256 of the lines before it

    body = "".join(line + "\n" for line in lines[:-1])
    tail = json.loads(lines[-1])
    tail[next(k for k in tail if "sha" in k)] = hashlib.sha256(body.encode()).hexdigest()
    (tmp_path / "b.jsonl").write_text(body + json.dumps(tail) + "\n")
    code, out = cli("import", str(tmp_path / "b.jsonl"), "--store", str(tmp_path / "b"))
    assert code == 0, out
    code, out = cli("edit", "1", "--undo", "--store", str(tmp_path / "b"))
    assert code == 1 and "memory 1:" in out and "Traceback" not in out, out
    with Memory.open(tmp_path / "b") as mem:
        assert mem.get(1).text == "I live in Porto"


# ---------------------------------------------------------------------- messages


def test_messages_say_what_to_do(tmp_path):
    s = ["--store", str(tmp_path / "s")]
    cli("remember", "hello", *s)
    code, out = cli("recall", "", *s)
    assert code == 2 and "give the words to look for" in out and "remember" not in out
    code, out = cli("remember", "   ", *s)
    assert code == 1 and "item 0" not in out and "empty" in out
    code, out = cli("remember", "x", "--importance", "7", *s)
    assert code == 1 and "item 0" not in out and "importance" in out
    code, out = cli("list", "-n", "-5", *s)
    assert code == 2 and "2**62" not in out and "-5" in out
    code, out = cli("recall", "q" * 20_000, *s)
    assert code == 1 and "split" not in out and "shorten" in out
    code, out = cli("forget", "--restore", "1", *s)
    assert code == 1 and "#1 is not forgotten" in out and "restored" not in out
    cli("forget", "1", *s)
    assert cli("forget", "--restore", "1", *s) == (0, "restored #1\n")
    with Memory.open(tmp_path / "s") as mem:
        with pytest.raises(InvalidArgumentError) as e:
            mem.remember("x", importance=3)
        assert not str(e.value).startswith("item")
        with pytest.raises(InvalidArgumentError, match="limit must be a count") as e:
            mem.list(limit=-5)
        assert "2**" not in str(e.value)


@pytest.mark.parametrize("content", ['{"foo":1}', '{"foo":1}\n{"bar":2}\n', "[1, 2]"])
def test_json_that_is_not_an_export_is_refused_not_imported_as_a_note(tmp_path, content):
    f = tmp_path / "data.json"
    f.write_text(content)
    code, out = cli("import", str(f), "--store", str(tmp_path / "s"))
    assert code == 1 and "not a localmem export" in out.replace("nor a localmem", "not a localmem")
    with Memory.open(tmp_path / "s") as mem:
        assert len(mem) == 0  # nothing imported


def test_memory_budget_takes_a_share_or_a_size_never_a_bare_count():
    assert parse_budget("60%") == 0.6 and parse_budget("0.6") == 0.6
    assert parse_budget("500MB") == 500_000_000 and parse_budget("1.5GiB") == 3 << 29
    for bad in ("2", "500", "60", "-5%", "abc"):
        with pytest.raises(InvalidArgumentError):
            parse_budget(bad)
    code, out = cli("ask", "hi", "--engine", "flash", "--memory-budget", "2")
    assert code == 2 and "needs a unit" in out


# ---------------------------------------------------------------------- import --merge


def test_import_merge_remaps_ids_and_folds_what_is_already_there(tmp_path):
    a, b = ["--store", str(tmp_path / "a")], ["--store", str(tmp_path / "b")]
    for text in ("I live in Porto", "My sister is called Ana", "I work as a nurse"):
        cli("remember", text, "--kind", "fact", *a)
    for text in ("I live in Porto", "My dog is called Rex"):
        cli("remember", text, "--kind", "fact", *b)
    code, _ = cli("export", "-o", str(tmp_path / "a.jsonl"), *a)
    assert code == 0
    code, out = cli("import", str(tmp_path / "a.jsonl"), *b)
    assert code == 1 and "--merge" in out  # ids 1 and 2 are taken
    code, out = cli("import", "--merge", str(tmp_path / "a.jsonl"), *b)
    assert code == 0 and "merged 3 memories" in out and "2 new" in out, out
    with Memory.open(tmp_path / "b") as mem:
        texts = sorted(m.text for m in mem.list(limit=50))
        assert texts == ["I live in Porto", "I work as a nurse", "My dog is called Rex",
                         "My sister is called Ana"]  # fmt: skip
        assert {m.id for m in mem.list(limit=50)} == {1, 2, 4, 5}  # new ids: 3, 4, 5
        assert mem.get(3).merged_into == 1  # the export's copy, folded into the store's
    # Merging the same export again adds nothing.
    code, out = cli("import", "--merge", str(tmp_path / "a.jsonl"), *b)
    assert code == 0 and "0 new" in out


def test_import_merge_folds_near_duplicates_as_consolidation_does(tmp_path):
    with Memory.open(tmp_path / "a") as mem:
        mem.remember("I work at Google as an engineer", kind="fact")
        from localmem.portable import export_jsonl

        with open(tmp_path / "a.jsonl", "w") as f:
            export_jsonl(mem, f)
    with Memory.open(tmp_path / "b") as mem:
        mem.remember("I work at Google", kind="fact")
        from localmem.portable import import_file

        import_file(mem, tmp_path / "a.jsonl", merge=True)
        live = mem.list(limit=10)
        assert [m.text for m in live] == ["I work at Google as an engineer"]
        assert live[0].id == 1  # the store's own id survives, with the more informative text


def _export(mem, path):
    from localmem.portable import export_jsonl

    with open(path, "w") as f:
        export_jsonl(mem, f)


def test_import_merge_keeps_links_between_the_imported_and_works_on_a_syncing_store(tmp_path):
    from localmem.portable import import_file

    with Memory.open(tmp_path / "a", forgetting=False) as mem:
        old = mem.remember("Caroline lives in Porto", kind="fact", when="2023-01-01")
        new = mem.remember("Caroline lives in Lisbon now", kind="fact", when="2024-01-01")
        mem.consolidate()
        assert mem.get(old.id).superseded_by == new.id
        _export(mem, tmp_path / "a.jsonl")
    with Memory.open(tmp_path / "b", forgetting=False) as mem:
        mem.sync_init(tmp_path / "folder")  # ids of this device's own range from now on
        for i in range(3):
            mem.remember(f"unrelated note {i}")
        mem.remember("I work at Google", kind="fact")
        _export_google = tmp_path / "g.jsonl"
        with Memory.open(tmp_path / "g", forgetting=False) as g:
            g.remember("I work at Google as an engineer", kind="fact")
            _export(g, _export_google)
        import_file(mem, tmp_path / "a.jsonl", merge=True)
        import_file(mem, _export_google, merge=True)
        live = {m.text: m for m in mem.list(limit=50)}
        porto, lisbon = live["Caroline lives in Porto"], live["Caroline lives in Lisbon now"]
        assert porto.superseded_by == lisbon.id  # the link follows the new ids
        assert "I work at Google" not in live and "I work at Google as an engineer" in live


def test_import_merge_lets_the_later_statement_win_whichever_side_it_comes_from(tmp_path):
    from localmem.portable import import_file

    with Memory.open(tmp_path / "a", forgetting=False) as mem:
        mem.remember("Caroline lives in Porto", kind="fact", when="2020-01-01")
        _export(mem, tmp_path / "a.jsonl")
    with Memory.open(tmp_path / "b", forgetting=False) as mem:
        mine = mem.remember("Caroline lives in Lisbon now", kind="fact", when="2024-01-01")
        import_file(mem, tmp_path / "a.jsonl", merge=True)
        theirs = next(m for m in mem.list(limit=10) if m.id != mine.id)
        assert theirs.superseded_by == mine.id and mem.get(mine.id).superseded_by is None


# ---------------------------------------------------------------------- no terminal


def _localmem(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("localmem")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, **kw)


def test_bare_localmem_without_a_terminal_prints_help_and_exits(tmp_path):
    with open(os.devnull) as null:
        out = _localmem(stdin=null)
    assert out.returncode == 0 and "Usage: localmem" in out.stdout
    assert "\x1b[" not in out.stdout  # no escape codes: the chat did not start
    assert not (tmp_path / "store").exists()


def test_the_chat_without_a_terminal_says_it_needs_one(tmp_path):
    code, out = cli("chat")  # CliRunner: no terminal
    assert code == 1 and "needs a terminal" in out and "localmem ask" in out
    assert not (tmp_path / "store").exists()


def test_bare_localmem_answers_a_question_piped_in(tmp_path):
    out = _localmem(input="My sister is called Ana.\n")
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout and out.stdout.strip()
    with Memory.open(tmp_path / "store") as mem:  # remembered, as by `ask`
        assert any(m.text == "My sister is called Ana." for m in mem.list(limit=10))
