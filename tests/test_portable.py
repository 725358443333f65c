"""Export / import: the checksummed JSONL round trip (through the installed ``localmem``
entry point, piped), damaged exports refused, Markdown notes and a ChatGPT export read, and
the memory commands of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localmem import Memory
from localmem.cli import main
from localmem.forgetting import DAY
from localmem.portable import note_chunks, read_jsonl

FIELDS = ("text", "kind", "source", "session", "key", "when", "created", "importance", "pinned",
          "tags", "tier", "stability", "last_used", "recalls", "superseded_by", "merged_into",
          "sources")  # fmt: skip


def state(mem):
    return {id: tuple(getattr(mem.get(id), f) for f in FIELDS) for id in sorted(mem.store.ids())}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A store whose memories are in every state: each tier, pinned, reinforced, merged."""
    path = tmp_path_factory.mktemp("src") / "store"
    now = time.time()
    clock = [now - 70 * DAY]
    with Memory.open(path, clock=lambda: clock[0]) as mem:
        mem.remember("Priya is allergic to peanuts", kind="fact", tags=["health"],
                     importance=0.5, when="2025-03-01T10:00:00")  # fmt: skip
        mem.remember("Marco prefers tea", kind="preference")
        mem.remember("Marco prefers tea", kind="preference")  # merged into the first
        clock[0] = now - 40 * DAY
        mem.remember("the plumber comes on the first Tuesday", kind="note", tags=["house"])
        mem.remember("the wifi password is hunter2", kind="note", pinned=True, key="wifi")
        clock[0] = now - 20 * DAY
        mem.remember_many([
            {"text": f"chit-chat turn {i} about lunch and trains", "kind": "episodic",
             "session": "s1", "tags": ["chat"]} for i in range(4)
        ])  # fmt: skip
        clock[0] = now - 1 * DAY
        n = mem.remember("Lena collects stamps", kind="fact")
        mem.reinforce([n.id])
        clock[0] = now
        mem.consolidate()
    return path


def test_export_then_import_into_a_fresh_store_keeps_every_memory(source, tmp_path):
    with Memory.open(source) as mem:
        before = state(mem)
    tiers = {s[10] for s in before.values()}
    assert {"hot", "forgotten"} <= tiers and len(tiers) >= 3, tiers
    assert any(s[8] for s in before.values()) and any(s[13] for s in before.values())
    assert any(s[15] for s in before.values())  # a merged duplicate
    exe = Path(sys.executable).with_name("localmem")
    dst = tmp_path / "copy"
    # The must-show: localmem export | localmem import, through the installed entry point.
    out = subprocess.run(
        f"{exe} export --store {source} | {exe} import - --store {dst}",
        shell=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "imported" in out.stderr
    with Memory.open(dst) as mem:
        after = state(mem)
        assert after == before
        hits = mem.recall("who is allergic to peanuts?", k=1)
        assert hits and hits[0].memory.text == "Priya is allergic to peanuts"


def test_damaged_or_truncated_exports_are_refused(source, tmp_path):
    r = CliRunner()
    exp = tmp_path / "e.jsonl"
    assert r.invoke(main, ["export", "-o", str(exp), "--store", str(source)]).exit_code == 0
    lines = exp.read_text().splitlines(keepends=True)
    header, records = read_jsonl(lines)
    assert header["count"] == len(records) > 5
    cases = {
        "cut short": lines[:-2],
        "does not match": [lines[0], lines[1].replace('"text":"', '"text":"X'), *lines[2:]],
        "not JSON": [lines[0], "{oops\n", *lines[2:]],
    }
    for why, ls in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text("".join(ls))
        res = r.invoke(main, ["import", str(bad), "--store", str(tmp_path / f"d-{len(why)}")])
        assert res.exit_code == 1 and why in res.output and "Traceback" not in res.output, (
            res.output
        )
    # Into a store that already has those ids: refused, nothing written.
    res = r.invoke(main, ["import", str(exp), "--store", str(source)])
    assert res.exit_code == 1 and "empty store" in res.output


def test_markdown_notes_and_a_chatgpt_export(tmp_path):
    md = tmp_path / "trip.md"
    md.write_text("# Lisbon trip\n\nWe landed at 9.\nThe hotel is in Alfama.\n\n"
                  "## Food\n\nPastel de nata at Manteigaria.\n")  # fmt: skip
    assert list(note_chunks(md.read_text())) == [
        "Lisbon trip: We landed at 9. The hotel is in Alfama.",
        "Food: Pastel de nata at Manteigaria.",
    ]
    conv = [{
        "id": "c1", "title": "Garden", "create_time": 1700000000.0,
        "mapping": {
            "a": {"message": None},
            "b": {"message": {"author": {"role": "user"}, "create_time": 1700000100.0,
                              "content": {"parts": ["How deep do I plant garlic?"]}}},
            "c": {"message": {"author": {"role": "assistant"}, "create_time": 1700000105.0,
                              "content": {"parts": ["About 5 cm deep."]}}},
            "d": {"message": {"author": {"role": "system"}, "content": {"parts": ["x"]}}},
        },
    }]  # fmt: skip
    cj = tmp_path / "conversations.json"
    cj.write_text(json.dumps(conv))
    r = CliRunner()
    store = str(tmp_path / "s")
    assert "2 memories (notes)" in r.invoke(main, ["import", str(md), "--store", store]).output
    res = r.invoke(main, ["import", str(cj), "--store", store])
    assert "2 memories (ChatGPT export)" in res.output, res.output
    with Memory.open(store) as mem:
        items = {m.text: m for m in mem.list(limit=10)}
        g = items["How deep do I plant garlic?"]
        assert g.session == "c1" and "user" in g.tags and g.when.timestamp() == 1700000100.0
        assert "trip" in items["Food: Pastel de nata at Manteigaria."].tags
    (tmp_path / "junk.json").write_text('[{"mapping": 3')
    res = r.invoke(main, ["import", str(tmp_path / "junk.json"), "--store", store])
    assert res.exit_code == 1 and "not JSON" in res.output


def test_memory_commands(tmp_path):
    r = CliRunner()
    s = ["--store", str(tmp_path / "s")]
    out = r.invoke(
        main, ["remember", "Lena collects stamps", "--kind", "fact", "--tag", "hobby", *s]
    )
    assert out.exit_code == 0 and out.output.startswith("remembered #")
    id = int(out.output.split("#")[1])
    res = r.invoke(main, ["recall", "what does Lena collect?", "--json", *s])
    hits = json.loads(res.output)
    assert hits[0]["id"] == id and hits[0]["why"]["keyword"] > 0
    assert "Lena collects stamps" in r.invoke(main, ["list", "--tag", "hobby", *s]).output
    assert "fact" in r.invoke(main, ["stats", *s]).output
    assert "forgot #" in r.invoke(main, ["forget", str(id), *s]).output
    assert "nothing relevant" in r.invoke(main, ["recall", "stamps", *s]).output
    assert "restored" in r.invoke(main, ["forget", "--restore", str(id), *s]).output
    assert r.invoke(main, ["consolidate", "--compact", *s]).exit_code == 0
    bad = r.invoke(main, ["forget", "987654", *s])
    assert bad.exit_code == 1 and "no memory with id 987654" in bad.output
    bad = r.invoke(main, ["remember", "", *s])
    assert bad.exit_code == 1 and "empty" in bad.output and "Traceback" not in bad.output


def test_reembed_moves_a_store_to_another_model(tmp_path, monkeypatch):
    from localmem import registry

    e = registry.entry("all-minilm-l6-v2-int8")
    other = tmp_path / "m" / "other.onnx"
    other.parent.mkdir()
    other.write_bytes(registry.asset(e["model"]).path().read_bytes())
    (other.parent / "tokenizer.json").write_bytes(registry.asset(e["tokenizer"]).read())
    r = CliRunner()
    s = ["--store", str(tmp_path / "s")]
    r.invoke(main, ["remember", "Ana likes orchids", *s])
    out = r.invoke(main, ["reembed", "--model", str(other), *s])
    assert out.exit_code == 0 and "1 memories embedded" in out.output, out.output
    bad = r.invoke(main, ["recall", "orchids", *s])  # the default model no longer fits
    assert bad.exit_code == 1 and "localmem reembed" in bad.output
    monkeypatch.setenv("LOCALMEM_EMBEDDING", str(other))
    assert "Ana likes orchids" in r.invoke(main, ["recall", "orchids", *s]).output
