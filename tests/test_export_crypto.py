"""Encrypted exports (issue 25, ``localmem export --encrypt``): the round trip through a real
store, no memory's text in the file, a wrong passphrase told apart from damage, and a fuzz of
damaged and cut files that must each be refused whole — the store unchanged — with a
localmem error, never another exception and never a part of the file imported."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
import struct
import time

import pytest
from click.testing import CliRunner

from localmem import Memory, SealedWriter, is_sealed, open_sealed
from localmem.cli import main
from localmem.errors import (
    CorruptFileError,
    EncryptionKeyError,
    InvalidArgumentError,
)
from localmem.portable import export_encrypted, export_jsonl, import_data, read_jsonl
from localmem.store import sealedstream
from localmem.testing import HashEmbedder
from tests import tally

# Cheap Argon2id for tests (the CLI uses keyfile.ARGON2); recorded in each file's header.
FAST = {"time_cost": 1, "memory_kib": 8, "parallelism": 1}
PW = "correct horse battery staple"
MARKERS = [f"QZX{i:03d}marker" for i in range(40)]
ENV = "LOCALMEM_EXPORT_PASSPHRASE"


def opened(path):
    return Memory.open(path, embedder=HashEmbedder(), sync="off", forgetting=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A store of 42 memories, each with a unique marker no ciphertext may show."""
    path = tmp_path_factory.mktemp("src") / "store"
    with opened(path) as mem:
        mem.remember_many([
            {"text": f"note {m}: Ana's café order is a flat white — ünïcödé", "kind": "note",
             "tags": ["t", m[:6]]} for m in MARKERS
        ])  # fmt: skip
        mem.remember("the wifi password is hunter2-secret", kind="fact", pinned=True)
        mem.remember("x" * 3000 + " long memory", kind="note")  # spans several chunks
    return path


def records_of(mem):
    out = io.StringIO()
    export_jsonl(mem, out)
    return read_jsonl(out.getvalue().splitlines(keepends=True))[1]


def sealed_export(path, chunk_size=512, passphrase=PW) -> bytes:
    b = io.BytesIO()
    with opened(path) as mem:
        n = export_encrypted(mem, b, passphrase, params=FAST, chunk_size=chunk_size)
        assert n == len(mem) == 42
    return b.getvalue()


def test_round_trip_through_a_real_store(source, tmp_path):
    data = sealed_export(source)
    assert data.startswith(sealedstream.MAGIC) and is_sealed(data)
    with opened(source) as mem:
        want = records_of(mem)
    with opened(tmp_path / "copy") as mem:
        assert import_data(mem, data, "backup", passphrase=PW) == ("encrypted localmem export", 42)
        assert records_of(mem) == want  # ids, texts and every metadata key
        assert mem.recall("café flat white", k=3)
    with opened(tmp_path / "copy2") as mem:  # the passphrase asked for lazily, once
        asked = []
        import_data(mem, data, "backup", passphrase=lambda: asked.append(1) or PW)
        assert asked == [1] and len(mem) == 42


def test_the_file_holds_no_memory_text_but_the_plain_export_does(source):
    data = sealed_export(source)
    plain = io.StringIO()
    with opened(source) as mem:
        export_jsonl(mem, plain)
    clear = plain.getvalue().encode()
    secrets = [m.encode() for m in MARKERS] + [b"hunter2-secret", "café".encode(), b"xxxxxxxx"]
    assert all(s in clear for s in secrets)  # the control: the plain export shows them
    assert not [s for s in secrets if s in data]
    assert PW.encode() not in data and b"localmem-export" not in data
    # Chunked: every chunk but the last holds 512 bytes of plaintext.
    assert len(data) > len(clear) + 40 * (len(clear) // 512)


def test_a_wrong_or_missing_passphrase_is_a_key_error_and_imports_nothing(source, tmp_path):
    data = sealed_export(source)
    with opened(tmp_path / "s") as mem:
        with pytest.raises(EncryptionKeyError, match="wrong one"):
            import_data(mem, data, "backup", passphrase="not it")
        with pytest.raises(EncryptionKeyError, match="passphrase is needed"):
            import_data(mem, data, "backup")
        with pytest.raises(InvalidArgumentError, match="non-empty"):
            import_data(mem, data, "backup", passphrase="")
        assert len(mem) == 0


def chunk_spans(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Where the chunks start (after the header), and each chunk's (start, end)."""
    body = data.index(b"\n", len(sealedstream.MAGIC)) + 1 + 40 + 32
    spans, pos = [], body
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        spans.append((pos, pos + 4 + n))
        pos += 4 + n
    assert pos == len(data)
    return body, spans


def test_fuzz_flipped_bytes_and_cuts_are_refused_whole(source, tmp_path):
    """At least 500 single-byte changes and 500 cuts of an encrypted export, plus chunks
    dropped, repeated, swapped and appended: each is refused with CorruptFileError (or
    InvalidArgumentError for a first line naming another version) — never a wrong
    passphrase, never another exception, never a memory imported."""
    data = sealed_export(source, chunk_size=256)
    body, spans = chunk_spans(data)
    assert len(spans) >= 20, len(spans)
    rng = random.Random(25)
    cases: list[tuple[str, bytes]] = []
    # Positions over the whole file, and as many again in the header, key check and digest.
    for where in [rng.randrange(len(data)) for _ in range(500)] + [
        rng.randrange(body) for _ in range(100)
    ]:
        bad = bytearray(data)
        bad[where] ^= rng.randrange(1, 256)
        cases.append((f"flip {where}", bytes(bad)))
    cases += [(f"cut {n}", data[:n]) for n in (rng.randrange(1, len(data)) for _ in range(500))]
    cases += [(f"cut at chunk {i}", data[:s]) for i, (s, _) in enumerate(spans)]
    cases += [(f"cut in header {n}", data[:n]) for n in range(1, body, 7)]
    c = [data[s:e] for s, e in spans]
    cases += [
        ("drop chunk 3", data[:body] + b"".join(c[:3] + c[4:])),
        ("repeat chunk 3", data[:body] + b"".join(c[:4] + c[3:])),
        ("swap chunks 3, 4", data[:body] + b"".join([*c[:3], c[4], c[3], *c[5:]])),
        ("drop the last chunk", data[:body] + b"".join(c[:-1])),
        ("last chunk twice", data + c[-1]),
        ("bytes appended", data + b"\x00"),
        ("first chunk of another export", data[:body] + chunk_spans_of_other(source)),
    ]

    def chunk_at(pos: int) -> int | None:
        return next((i for i, (s, e) in enumerate(spans) if s <= pos < e), None)

    outcomes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    t0 = time.perf_counter()
    with opened(tmp_path / "target") as mem:
        for what, bad in cases:
            assert bad != data
            try:
                import_data(mem, bad, "fuzzed", passphrase=PW)
            except (CorruptFileError, InvalidArgumentError) as e:
                kind, msg = type(e).__name__, str(e)
            else:
                pytest.fail(f"{what}: a damaged export was imported")
            assert "fuzzed" in msg, msg  # the message names the file
            if what.startswith("flip") and (i := chunk_at(int(what.split()[1]))) is not None:
                assert f"chunk {i} " in msg, (what, msg)  # and the chunk that is damaged
            outcomes[kind] = outcomes.get(kind, 0) + 1
            reason = next((r for r in REASONS if r in msg), msg)
            reasons[reason] = reasons.get(reason, 0) + 1
            assert len(mem) == 0, what  # nothing of it imported
    took = time.perf_counter() - t0
    assert sum(outcomes.values()) == len(cases) >= 1100
    assert outcomes.get("InvalidArgumentError", 0) <= 5  # only "v1" changed to another digit
    tally.add("encrypted export fuzz cases refused", len(cases))
    print(f"\n{len(cases)} damaged encrypted exports refused in {took:.2f} s: {outcomes}")
    for r, n in sorted(reasons.items(), key=lambda x: -x[1]):
        print(f"  {n:5}  {r}")


REASONS = ("failed authentication", "out of bounds", "header is damaged", "first line",
           "cut short", "more bytes follow", "version")  # fmt: skip


def chunk_spans_of_other(source) -> bytes:
    """The first chunk of another export of the same store, same passphrase: another salt,
    so another key and another header digest."""
    other = sealed_export(source, chunk_size=256)
    _, spans = chunk_spans(other)
    return other[spans[0][0] : spans[0][1]]


def test_each_damage_is_named(source):
    data = sealed_export(source, chunk_size=256)
    body, spans = chunk_spans(data)
    c = [data[s:e] for s, e in spans]

    def error(bad: bytes) -> str:
        with pytest.raises(CorruptFileError) as e:
            open_sealed(bad, PW, name="b.lmx")
        return str(e.value)

    bad = bytearray(data)
    bad[spans[5][0] + 30] ^= 1
    assert "b.lmx: chunk 5" in error(bytes(bad)) and "failed authentication" in error(bytes(bad))
    assert "cut short after it" in error(data[: spans[7][0]])
    assert "chunk 7" in error(data[: spans[7][0] + 10]) and "cut short" in error(data[:-1])
    assert "more bytes follow" in error(data + c[-1])
    assert "chunk 4" in error(data[:body] + b"".join(c[:4] + c[5:]))
    bad = bytearray(data)
    bad[spans[2][0] : spans[2][0] + 4] = b"\xff\xff\xff\xff"  # a length read before any check
    assert "out of bounds" in error(bytes(bad))
    bad = bytearray(data)
    bad[40] ^= 1
    assert "header is damaged" in error(bytes(bad))
    assert "first line" in error(data[:10])
    # Damaged and cut files are told apart from a wrong passphrase before the KDF runs.
    with pytest.raises(EncryptionKeyError):
        open_sealed(data, "wrong", name="b.lmx")


def forged(data: bytes, **change) -> bytes:
    """``data`` with its header changed and the (unkeyed) digest recomputed: what a forger
    can do without the passphrase."""
    m = len(sealedstream.MAGIC)
    end = data.index(b"\n", m) + 1
    header = json.loads(data[m:end])
    header.update(change)
    line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    head = data[:m] + line + data[end : end + 40]
    return head + hashlib.sha256(head).digest() + data[end + 72 :]


def test_a_forged_header_fails_the_key_check_and_hostile_sizes_are_refused_first(source):
    data = sealed_export(source)
    # Well-formed but changed: the key check, which binds the header, fails.
    with pytest.raises(EncryptionKeyError):
        open_sealed(forged(data, chunk_size=4096), PW)
    with pytest.raises(EncryptionKeyError):
        open_sealed(forged(data, salt="00" * 16), PW)
    # Out of bounds: refused before Argon2id runs (a 2**40 KiB ask would not return).
    for change in ({"memory_kib": 1 << 40}, {"time_cost": 10**9}, {"chunk_size": 1 << 40},
                   {"chunk_size": 0}, {"salt": "abc"}, {"cipher": "rot13"}, {"extra": 1},
                   {"time_cost": True}):  # fmt: skip
        t0 = time.perf_counter()
        with pytest.raises(CorruptFileError, match="not a valid encrypted export header"):
            open_sealed(forged(data, **change), PW)
        assert time.perf_counter() - t0 < 0.5
    # Another version of the format is named as such.
    newer = data.replace(b"/v1\n", b"/v2\n", 1)
    with pytest.raises(InvalidArgumentError, match="version 2"):
        open_sealed(newer, PW)


def test_an_export_that_failed_half_way_is_refused_as_cut_short():
    b = io.BytesIO()
    with pytest.raises(RuntimeError), SealedWriter(b, PW, params=FAST, chunk_size=256) as w:
        w.write(b"a" * 1000)
        raise RuntimeError("disk gone")
    with pytest.raises(CorruptFileError, match=r"chunk 2 .* cut short after it"):
        open_sealed(b.getvalue(), PW)
    for size in (0, 1, 255, 256, 257, 512, 1000):  # chunk boundaries, an empty last chunk
        b = io.BytesIO()
        with SealedWriter(b, PW, params=FAST, chunk_size=256) as w:
            for i in range(0, size, 100):
                w.write(bytes([i % 251]) * min(100, size - i))
        assert open_sealed(b.getvalue(), PW) == b"".join(
            bytes([i % 251]) * min(100, size - i) for i in range(0, size, 100)
        )


def test_plain_imports_are_not_taken_for_encrypted_ones():
    for data in (b"# notes\n\nhello", b'{"format":"localmem-export"}', b"[]", b"l0cal",
                 b"localmem is great\n" * 3, bytes(range(256))):  # fmt: skip
        assert not is_sealed(data)
    assert is_sealed(sealedstream.MAGIC[:12])  # what is left of a cut one
    assert is_sealed(b"localmem-encrypted-expXrt/v1\n{...")  # a damaged one


def test_cli_export_encrypt_and_import(tmp_path, monkeypatch):
    """Through the command, with the real embedding model and the default Argon2id."""
    r = CliRunner()
    a, b = ["--store", str(tmp_path / "a")], ["--store", str(tmp_path / "b")]
    for text in ("Lena collects QZXstamps", "Marco prefers QZXgreen tea"):
        assert r.invoke(main, ["remember", text, *a]).exit_code == 0
    out = tmp_path / "backup.lmx"
    # No passphrase and no terminal to type it at: a message, nothing written.
    monkeypatch.delenv(ENV, raising=False)
    res = r.invoke(main, ["export", "--encrypt", "-o", str(out), *a])
    assert res.exit_code == 1 and ENV in res.output and not out.exists(), res.output
    monkeypatch.setenv(ENV, PW)
    res = r.invoke(main, ["export", "--encrypt", "-o", str(out), *a])
    assert res.exit_code == 0 and "exported 2 memories (encrypted)" in res.output, res.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    raw = out.read_bytes()
    assert raw.startswith(sealedstream.MAGIC) and b"QZX" not in raw
    json.loads(raw.split(b"\n")[1])  # the header line: KDF, its parameters and salt
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # Standard output (a pipe here) and back through standard input.
    res = r.invoke(main, ["export", "--encrypt", *a])
    piped = res.stdout_bytes
    assert res.exit_code == 0 and piped.startswith(sealedstream.MAGIC) and b"QZX" not in piped
    monkeypatch.setenv(ENV, "wrong")
    res = r.invoke(main, ["import", str(out), *b])
    assert res.exit_code == 1 and "wrong one" in res.output and "Traceback" not in res.output
    monkeypatch.delenv(ENV)
    res = r.invoke(main, ["import", "-", *b], input=piped)  # stdin is the file: no prompt
    assert res.exit_code == 1 and ENV in res.output
    monkeypatch.setenv(ENV, PW)
    res = r.invoke(main, ["import", str(out), *b])
    assert res.exit_code == 0 and "2 memories (encrypted localmem export)" in res.output
    assert "QZXstamps" in r.invoke(main, ["list", *b]).output
    monkeypatch.setenv(ENV, PW)
    res = r.invoke(main, ["import", "-", "--store", str(tmp_path / "c")], input=piped)
    assert res.exit_code == 0 and "2 memories" in res.output, res.output
    cut = tmp_path / "cut.lmx"
    cut.write_bytes(raw[:-5])
    res = r.invoke(main, ["import", str(cut), *["--store", str(tmp_path / "d")]])
    assert res.exit_code == 1 and "cut.lmx: chunk 0" in res.output and "cut short" in res.output


def test_cli_refuses_a_binary_export_to_a_terminal_and_documents_both(tmp_path, monkeypatch):
    import click.testing

    r = CliRunner()
    monkeypatch.setenv(ENV, PW)
    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    res = r.invoke(main, ["export", "--encrypt"])
    assert (
        res.exit_code == 1
        and "binary" in res.output
        and not res.stdout_bytes.startswith(sealedstream.MAGIC)
    )
    help_export = r.invoke(main, ["export", "--help"]).output
    help_import = r.invoke(main, ["import", "--help"]).output
    assert "--encrypt" in help_export and ENV in help_export and "passphrase" in help_export
    assert "encrypted export" in help_import and ENV in help_import
