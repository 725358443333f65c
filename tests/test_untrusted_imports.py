"""Imports are untrusted input: a crafted export must not brick the store, every record
passes the checks ``remember`` makes, and garbage of every kind is refused with a clear
error. A fuzz test generates thousands of import files (issue 21, defects 1, 9, 11)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localmem import Memory
from localmem.errors import InvalidArgumentError, LocalmemError
from localmem.portable import FORMAT, VERSION, export_jsonl, import_data
from localmem.testing import HashEmbedder
from localmem.text.validate import MAX_TEXT_CHARS
from tests import tally


def export_text(records: list[dict]) -> str:
    """A well-formed export holding ``records``, with a checksum anyone can compute."""
    lines = [json.dumps({"format": FORMAT, "version": VERSION, "count": len(records)})]
    lines += [json.dumps(r) for r in records]  # a lone surrogate as its \\u escape
    body = "".join(line + "\n" for line in lines)
    return body + json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest()}) + "\n"


def record(id=51, text="Ana likes tea", **meta):  # an id the store has not: checked, not clashing
    return {"id": id, "text": text, "meta": {"kind": "fact", "when": 1.7e9, **meta}}


def opened(path):
    return Memory.open(path, embedder=HashEmbedder(), sync="off", forgetting=False)


def still_serves(path) -> int:
    """The store opens, lists, recalls and exports; returns how many memories it has."""
    with opened(path) as mem:
        n = len(mem)
        mem.list(limit=5)
        mem.recall("tea", k=3)
        export_jsonl(mem, io.StringIO())
        return n


BAD = {
    "when is a string": record(when="not a time"),
    "when is NaN": record(when=float("nan")),
    "when is huge": record(when=1e300),
    "text too long": record(text="x" * (MAX_TEXT_CHARS + 1)),
    "text with NUL": record(text="a\x00b"),
    "empty text": record(text="   "),
    "id 0": record(id=0),
    "negative id": record(id=-5),
    "id too large": record(id=2**64),
    "kind unknown": record(kind="gossip"),
    "tier unknown": record(tier="lava"),
    "stability negative": record(stability=-1.0),
    "pinned is a string": record(pinned="no"),
    "tag with NUL": record(tags=["a\x00b"]),
    "1 MiB tag": record(tags=["t" * (1 << 20)]),
    "tags not a list": record(tags="abc"),
    "session a number": record(session=5),
    "lone surrogate": record(text="caf\ud800"),
    "sources not a list": record(sources={"id": 1}),
    "unknown key": record(colour="red"),
    "recalls a float": record(recalls=1.5),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_crafted_export_is_refused_and_the_store_still_opens(tmp_path, name):
    path = tmp_path / "s"
    with opened(path) as mem:
        mem.remember("Ana likes tea", kind="fact")
        with pytest.raises(InvalidArgumentError):
            import_data(mem, export_text([record(id=50, text="fine"), BAD[name]]).encode(),
                        "x")  # fmt: skip
        assert len(mem) == 1  # nothing of the file was imported
    assert still_serves(path) == 1


def test_duplicate_ids_in_an_export_are_refused(tmp_path):
    with opened(tmp_path / "s") as mem:
        data = export_text([record(id=7, text="one"), record(id=7, text="two")]).encode()
        with pytest.raises(InvalidArgumentError, match="id 7 twice"):
            import_data(mem, data, "x")
        assert len(mem) == 0


def test_a_poisoned_record_already_in_the_log_is_quarantined_not_fatal(tmp_path):
    # What an older localmem let through: the record is in the log, and every open replays
    # it into the catalog. The store opens, the record is named in stats(), export works.
    from localmem.catalog import memmeta

    path = tmp_path / "s"
    with opened(path) as mem:
        good = mem.remember("Ana likes tea", kind="fact")
        for i, bad in enumerate([{"when": "not a time"}, {"when": float("nan")},
                                 {"when": 1.7e9, "tier": "cold", "code": "zz"}]):  # fmt: skip
            meta = memmeta.pack({"type": "memory", "kind": "fact", **bad})
            mem.store.put(100 + i, "poisoned", meta=meta)
    os.unlink(path / "catalog.sqlite")  # replayed from the log at the next open
    with opened(path) as mem:
        assert [m.id for m in mem.list()] == [good.id]
        bad = {u["id"] for u in mem.stats()["unreadable"]}
        assert bad == {100, 101, 102}
        assert mem.remember("Bo likes coffee").id not in (100, 101)
        out = io.StringIO()
        assert export_jsonl(mem, out) >= 2
    assert still_serves(path) == 2


def test_import_of_files_that_are_not_text_is_a_clear_error(tmp_path):
    with opened(tmp_path / "s") as mem:
        cases = {
            "binary": bytes(range(256)) * 4,
            "zip": b"PK\x03\x04" + b"\x00" * 100,
            "utf-16": "# notes\n\nhello".encode("utf-16"),
            "latin-1": "caf\xe9 au lait".encode("latin-1"),
            "deep JSON": b"[" * 100_000 + b"]" * 100_000,
            "deep export": (export_text([])[:-1] + "\n").encode() + b"[" * 100_000,
        }
        for name, data in cases.items():
            with pytest.raises(LocalmemError):
                import_data(mem, data, name)
        assert len(mem) == 0


def test_cli_import_and_export_errors_are_messages_not_tracebacks(tmp_path):
    exe = str(Path(sys.executable).parent / "localmem")
    env = {**os.environ, "LOCALMEM_STORE": str(tmp_path / "s")}
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)))
    for args in (
        ["import", str(tmp_path / "nonexistent.md")],
        ["import", str(binary)],
        ["import", str(tmp_path)],
        ["export", "-o", str(tmp_path / "missing" / "dir" / "f.jsonl")],
        ["stats", "--store", "/proc/x"],
        ["remember", "caf\udce9"],
    ):
        out = subprocess.run([exe, *args], capture_output=True, text=True, env=env,
                             errors="surrogateescape", timeout=120)  # fmt: skip
        assert out.returncode in (1, 2), (args, out.stdout, out.stderr)  # 2: click's usage
        assert "Traceback" not in out.stderr and "Error: " in out.stderr, out.stderr


def test_api_refuses_lone_surrogates_nul_tags_and_non_bool_pinned(tmp_path):
    with opened(tmp_path / "s") as mem:
        for kw in ({"text": "caf\ud800"}, {"text": "ok", "tags": ["a\x00"]},
                   {"text": "ok", "tags": ["t" * 1000]}, {"text": "ok", "session": "s\x00"},
                   {"text": "ok", "pinned": "no"}):  # fmt: skip
            with pytest.raises(InvalidArgumentError):
                mem.remember(**kw)
        with pytest.raises(InvalidArgumentError, match="the query is empty"):
            mem.recall("  ")


def test_a_long_markdown_paragraph_becomes_several_memories_none_lost(tmp_path):
    words = [f"w{i}" for i in range(20_000)]
    line = " ".join(words)  # ~128,000 characters on one line
    with opened(tmp_path / "s") as mem:
        what, n = import_data(mem, f"# Big\n\n{line}\n".encode(), "big")
        assert what == "notes" and n == len(line) // MAX_TEXT_CHARS + 1
        texts = [m.text for m in mem.list(limit=100, newest_first=False)]
    got = " ".join(t.removeprefix("Big: ") for t in sorted(texts, key=lambda t: int(
        t.removeprefix("Big: ").split()[0][1:])))  # fmt: skip
    assert got.split() == words


# ---------------------------------------------------------------------- fuzzing

_text = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["", " ", "\x00", "x" * 17_000, "\ud800", "# heading", "[", "{", "\n\n"]
)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_meta_key = st.sampled_from(
    ["kind", "source", "session", "key", "when", "created", "t_last", "forgotten_at",
     "importance", "pinned", "tags", "tier", "stability", "recalls", "superseded_by",
     "merged_into", "sources", "entities", "code", "model", "type", "other"]
)  # fmt: skip
_export_record = st.fixed_dictionaries(
    {"id": st.integers(-3, 2**64) | _json, "text": _text | _json,
     "meta": st.dictionaries(_meta_key, _json | _text, max_size=6) | _json},
)  # fmt: skip
_chatgpt = st.lists(
    st.fixed_dictionaries(
        {"id": _json, "title": _json, "create_time": _json,
         "mapping": st.dictionaries(_text, st.fixed_dictionaries({"message": st.fixed_dictionaries(
             {"author": st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant",
              "tool"]) | _json}), "content": st.fixed_dictionaries({"parts": st.lists(
              _text | _json, max_size=3)}) | _json, "create_time": _json}) | _json}) | _json,
             max_size=3) | _json}
    ),
    max_size=3,
)  # fmt: skip


@st.composite
def import_files(draw) -> bytes:
    kind = draw(st.sampled_from(["export", "export", "chatgpt", "markdown", "bytes"]))
    if kind == "export":
        recs = draw(st.lists(_export_record, max_size=4))
        text = export_text(recs)
        if draw(st.booleans()):  # damaged after the checksum was computed
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(_text) + text[at:]
        return text.encode("utf-8", "surrogatepass")
    if kind == "chatgpt":
        return json.dumps(draw(_chatgpt), allow_nan=True).encode("utf-8", "surrogatepass")
    if kind == "markdown":
        return "\n".join(draw(st.lists(_text, max_size=12))).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=300))


@pytest.fixture(scope="module")
def fuzz_stores(tmp_path_factory):
    """A store a run of examples shares; a new one every 100 (an export per example of an
    ever-growing store would make the run quadratic)."""
    root = tmp_path_factory.mktemp("fuzz")
    return {"root": root, "n": 0}


def fuzz_store(stores) -> Path:
    path = stores["root"] / f"s{stores['n'] // 100}"
    if stores["n"] % 100 == 0:
        with opened(path) as mem:
            mem.remember("Ana likes tea", kind="fact")
    stores["n"] += 1
    return path


@settings(max_examples=5000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=import_files())
def test_fuzz_import_formats_never_brick_the_store(fuzz_stores, data):
    """Every generated file imports valid memories or fails with a localmem error; the
    store keeps opening and exporting (0 bricked stores)."""
    with opened(fuzz_store(fuzz_stores)) as mem:
        before = len(mem)
        try:
            _, n = import_data(mem, data, "fuzz")
        except LocalmemError:
            assert len(mem) == before
            tally.add("import fuzz: refused", 1)
        else:
            tally.add("import fuzz: imported", 1)
            for m in mem.list(limit=n or 1):
                assert m.text.strip() and len(m.text) <= MAX_TEXT_CHARS and "\x00" not in m.text
        export_jsonl(mem, io.StringIO())
    tally.add("import fuzz: files", 1)
