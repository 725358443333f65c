"""The flash engine under a memory budget: embeddings, attention and some FFN tensors pinned in
anonymous memory, the other FFN tensors read from the GGUF on every pass by an I/O thread.
The real model throughout; the output must be the dense model's, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from localmem import _core, errors
from localmem.llm import FlashEngine
from localmem.llm.engine import parse_budget
from localmem.llm.llamacpp import resolve

TEXT = (Path(__file__).parent / "data" / "english.txt").read_text()
BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def model_path() -> Path:
    return resolve(None)[1]


@pytest.fixture(scope="module")
def tokens(model_path) -> np.ndarray:
    from localmem.llm.prompt import open_vocab

    vocab = open_vocab(model_path)
    try:
        return np.asarray(vocab.tokenize(TEXT.encode(), False, False)[:150], np.int32)
    finally:
        vocab.close()


@pytest.fixture(scope="module")
def dense_logits(model_path, tokens) -> np.ndarray:
    m = _core.LlamaModel(str(model_path), 256, 2)
    return m.eval(tokens, all_logits=True)


def mapped_rss(path: Path) -> int:
    """Resident bytes of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) * 1024
    return total


@pytest.mark.parametrize("share", ["least", 0.75, 1.0])
def test_a_budget_gives_the_dense_models_logits_bit_for_bit(
    model_path, tokens, dense_logits, share
):
    m = _core.LlamaModel(str(model_path), 256, 2)
    total = m.weight_bytes
    budget = m.min_budget if share == "least" else int(share * total)
    plan = m.plan_memory(budget)
    assert plan["pinned_bytes"] + plan["streamed_bytes"] == total
    assert plan["pinned_bytes"] + plan["slots"] * plan["slot_bytes"] <= budget
    if share == 1.0:
        assert plan["slots"] == 0 and plan["streamed_bytes"] == 0 and not m.weight_stream_stats()
    else:
        assert plan["slots"] >= 2 and plan["ffn_streamed"] == len(plan["streamed"]) > 0
        assert plan["slot_bytes"] >= 256 * 1024  # large reads: one whole tensor each
    out = m.eval(tokens, all_logits=True)
    assert np.array_equal(out, dense_logits)
    # The KV cache continues as in one pass: a prompt, then one token at a time.
    m.truncate(0)
    m.reset_weight_stream_stats()
    m.eval(tokens[:100])
    for i in range(100, 110):
        assert np.array_equal(m.eval(tokens[i : i + 1])[0], dense_logits[i])
    if plan["slots"]:
        st = m.weight_stream_stats()
        passes = 2 + 10  # the 100-token prompt is two chunks of at most 64
        assert st["tensors"] == passes * plan["ffn_streamed"]
        # What the stream read covers every pass (it may have read ahead into the next).
        assert st["bytes_read"] >= passes * plan["streamed_bytes"]


def test_a_model_whose_ffn_tensors_differ_in_size_stays_within_its_budget(
    model_path, tokens, tmp_path
):
    # The embedded model with its FFN up and down widened to F16 (the gate stays Q4_1):
    # tensors of two sizes, so the planner must count what it pins, not how many.
    sys.path.insert(0, str(BENCH))
    try:
        from widen_ffn import widen
    finally:
        sys.path.remove(str(BENCH))
    wide = tmp_path / "wide.gguf"
    widen(model_path, wide)
    dense = _core.LlamaModel(str(wide), 256, 2)
    want = dense.eval(tokens[:70], all_logits=True)
    total = dense.weight_bytes
    for share in (0.4, 0.5, 0.75, 0.99):
        m = _core.LlamaModel(str(wide), 256, 2)
        plan = m.plan_memory(int(share * total))
        assert plan["pinned_bytes"] + plan["slots"] * plan["slot_bytes"] <= int(share * total)
        assert plan["pinned_bytes"] + plan["streamed_bytes"] == total
        if share == 0.5:
            assert np.array_equal(m.eval(tokens[:70], all_logits=True), want)
            # Whole layers pinned, spread over the pass rather than the first ones.
            pinned = {n for n in range(30)} - {int(x.split(".")[1]) for x in plan["streamed"]}
            assert pinned and max(pinned) >= 15


def test_pinned_weights_are_copies_not_the_files_pages(model_path, tokens, tmp_path):
    # A copy of the model under its own name: no other engine of this process maps it.
    own = tmp_path / "model.gguf"
    shutil.copyfile(model_path, own)
    m = _core.LlamaModel(str(own), 256, 2)
    m.plan_memory(int(0.7 * m.weight_bytes))
    m.eval(tokens[:40])
    # Only the header (metadata, vocabulary) was read through the file's mapping.
    assert mapped_rss(own) < 8_000_000
    dense = _core.LlamaModel(str(own), 256, 2)
    dense.eval(tokens[:40])
    assert mapped_rss(own) > 90_000_000  # dense mode uses every weight in the mapping


def test_a_budget_below_the_least_says_what_the_least_is(model_path):
    m = _core.LlamaModel(str(model_path), 256, 1)
    with pytest.raises(errors.InvalidArgumentError, match="below the least this model runs in"):
        m.plan_memory(m.min_budget - 1)
    m.plan_memory(m.min_budget)  # the least itself runs
    with pytest.raises(errors.InvalidArgumentError, match="already has a memory plan"):
        m.plan_memory(m.min_budget)
    with pytest.raises(errors.InvalidArgumentError, match=r"give at least .* MB"):
        FlashEngine(model_path, n_ctx=256, memory_budget="20%")
    for bad in ("lots", "0%", "120%", "-5MB", 0, -1, True, 1.5):
        with pytest.raises(errors.InvalidArgumentError, match="memory budget is a share"):
            parse_budget(bad)
    assert parse_budget("60%") == 0.6 and parse_budget("0.6") == 0.6
    assert parse_budget("512MB") == 512_000_000 and parse_budget("1GiB") == 1 << 30


def test_a_model_file_cut_short_while_streaming_is_an_error_then_recovers(
    model_path, tokens, dense_logits, tmp_path
):
    own = tmp_path / "model.gguf"
    shutil.copyfile(model_path, own)
    whole = own.read_bytes()
    m = _core.LlamaModel(str(own), 256, 2)
    m.plan_memory(int(0.6 * m.weight_bytes))
    os.truncate(own, len(whole) // 2)  # streamed tensors now lie past the end
    with pytest.raises(errors.LocalmemError, match=r"truncated|ended"):
        for _ in range(3):  # the stream may hold a pass read before the cut
            m.truncate(0)
            m.eval(tokens[:20])
    own.write_bytes(whole)
    m.truncate(0)
    assert np.array_equal(m.eval(tokens, all_logits=True), dense_logits)


def test_a_streamed_tensor_changed_on_disk_is_an_error_not_other_weights(
    model_path, tokens, dense_logits, tmp_path
):
    own = tmp_path / "model.gguf"
    shutil.copyfile(model_path, own)
    m = _core.LlamaModel(str(own), 256, 2)
    plan = m.plan_memory(int(0.6 * m.weight_bytes))
    name = plan["streamed"][-1] + ".weight"  # say blk.29.ffn_down.weight
    t = next(x for x in _core.gguf_info(str(own))["tensors"] if x["name"] == name)
    at = t["offset"] + t["bytes"] // 2  # a byte inside it (offsets are from the file start)
    with open(own, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(bytes([old[0] ^ 0x40]))
        f.flush()
        os.fsync(f.fileno())
    with pytest.raises(errors.CorruptFileError, match="read back different"):
        for _ in range(3):  # the stream may hold a pass read before the change
            m.truncate(0)
            m.eval(tokens[:20])
    with open(own, "r+b") as f:
        f.seek(at)
        f.write(old)
    m.truncate(0)
    assert np.array_equal(m.eval(tokens, all_logits=True), dense_logits)


def test_the_engine_chats_under_a_budget_and_reports_its_plan(model_path):
    dense = FlashEngine(model_path, n_ctx=512)
    planned = FlashEngine(model_path, n_ctx=512, memory_budget="60%")
    try:
        assert planned.load_stats.extra["mode"] == "planned"
        summary = planned.plan_summary()
        assert "MB pinned" in summary and "MB/token streamed" in summary and "KiB" in summary
        assert dense.plan() == {} and dense.plan_summary() == "all weights mmap'd"
        q = [{"role": "user", "content": "Name three colours."}]
        a = "".join(dense.generate(q, max_tokens=16, temperature=0))
        b = "".join(planned.generate(q, max_tokens=16, temperature=0))
        assert a == b and a.strip()
        assert planned.weight_stream_stats()["bytes_read"] > 0
    finally:
        dense.close()
        planned.close()


def test_the_cli_takes_a_memory_budget_for_the_flash_engine(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "localmem")
    base = [exe, "ask", "--store", str(tmp_path / "s"), "--max-tokens", "16"]
    ok = subprocess.run([*base, "--engine", "flash", "--memory-budget", "60%", "--stats",
                         "My cat is called Tom. What is my cat called?"],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip()
    env = {**os.environ, "LOCALMEM_ENGINE": ""}
    wrong = subprocess.run([*base, "--memory-budget", "60%", "hi"], capture_output=True,
                           text=True, timeout=120, env=env)  # fmt: skip
    assert wrong.returncode == 2 and "needs --engine flash" in wrong.stderr
    bad = subprocess.run([*base, "--engine", "flash", "--memory-budget", "lots", "hi"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "memory budget is a share" in bad.stderr


def test_under_a_hard_memory_cap_the_budgeted_engine_runs_and_agrees(model_path):
    sys.path.insert(0, str(BENCH))
    try:
        from _cgroup import MemoryCgroup
    finally:
        sys.path.remove(str(BENCH))
    why = MemoryCgroup.unavailable()
    if why:
        pytest.skip(why)
    W = _core.LlamaModel(str(model_path), 256, 1).weight_bytes
    prompt, forced = list(range(1000, 1030)), list(range(2000, 2012))
    spec = {"path": str(model_path), "threads": 2, "n_ctx": 512, "prompt": prompt,
            "forced": forced, "warmup": 2, "engine": "flash"}  # fmt: skip
    child = [sys.executable, str(BENCH / "_capped_run.py")]

    def run(limit: int | None, **extra) -> dict:
        with MemoryCgroup(limit) as cg:
            p = cg.run(child, input=json.dumps({**spec, **extra}), capture_output=True,
                       text=True, timeout=300)  # fmt: skip
            assert p.returncode == 0, p.stderr[-2000:]
            return json.loads(p.stdout)

    ref = run(None)
    # 80 MB for the interpreter, libraries and buffers, 60% of the weights for the weights.
    limit = 80_000_000 + int(0.6 * W)
    got = run(limit, memory_budget=int(0.6 * W))
    assert got["top1"] == ref["top1"]
    assert 0 < got["available_memory"] < limit  # the cgroup's room, not the machine's
    assert got["plan"]["streamed_bytes"] > 0.3 * W
