"""The native engine (csrc/core/llm, FlashEngine): every SIMD kernel against the scalar one,
dequantization against the gguf package, the native GGUF reader against the gguf package
and under fuzzing, and the dense forward pass against llama-cpp-python on the real model."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

from localmem import _core, errors
from localmem.llm import FlashEngine, open_engine
from localmem.llm.flash import sample
from localmem.llm.llamacpp import resolve
from tests.engine_checks import check_read_ahead

TEXT = (Path(__file__).parent / "data" / "english.txt").read_text()
KERNELS = _core.llm_kernels_available()
F32, F16, Q4_0, Q4_1, Q8_0 = 0, 1, 2, 3, 8
BLOCK_BYTES = {Q4_0: 18, Q4_1: 20, Q8_0: 34}
GGUF_TYPE = {
    F32: gguf.GGMLQuantizationType.F32,
    F16: gguf.GGMLQuantizationType.F16,
    Q4_0: gguf.GGMLQuantizationType.Q4_0,
    Q4_1: gguf.GGMLQuantizationType.Q4_1,
    Q8_0: gguf.GGMLQuantizationType.Q8_0,
}


def random_row(rng: np.random.Generator, qtype: int, n: int) -> np.ndarray:
    """A row of n elements in a block format with sane f16 scales and random codes."""
    if qtype == F32:
        return rng.standard_normal(n).astype(np.float32).view(np.uint8)
    if qtype == F16:
        return rng.standard_normal(n).astype(np.float16).view(np.uint8)
    nb, bb = n // 32, BLOCK_BYTES[qtype]
    raw = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.05, size=(nb, 2)) * rng.choice([-1, 1], (nb, 2))
    hdr = scales.astype(np.float16).view(np.uint8).reshape(nb, 4)
    head = 4 if qtype == Q4_1 else 2
    raw[:, :head] = hdr[:, :head]
    return raw.reshape(-1)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return resolve(None)[1]


@pytest.fixture(scope="module")
def flash() -> FlashEngine:
    return FlashEngine(n_ctx=4096)


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize("qtype", [F32, F16, Q4_0, Q4_1, Q8_0])
@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_equals_the_scalar_one(kernel, qtype):
    rng = np.random.default_rng(qtype)
    for n in (32, 64, 576, 1536, 96 if qtype >= Q4_0 else 37):
        for _ in range(20):
            w = random_row(rng, qtype, n)
            x = rng.standard_normal(n).astype(np.float32) * rng.uniform(0.1, 10)
            ref = _core.llm_dot("scalar", qtype, w, x)
            got = _core.llm_dot(kernel, qtype, w, x)
            assert got == pytest.approx(ref, rel=1e-4, abs=1e-4 * (1 + abs(ref)))


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_q8_0_column_update_equals_the_scalar_one(kernel):
    rng = np.random.default_rng(1)
    for n in (32, 576):
        w = random_row(rng, Q8_0, n)
        y0 = rng.standard_normal(n).astype(np.float32)
        a, b = y0.copy(), y0.copy()
        _core.llm_axpy_q8_0("scalar", 0.37, w, a)
        _core.llm_axpy_q8_0(kernel, 0.37, w, b)
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
        want = y0 + 0.37 * _core.dequantize(Q8_0, w, n)
        np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_rows_equal_the_scalar_ones_bit_for_bit(kernel):
    """llama.cpp's order of operations is the definition: every set computes it exactly,
    so SIMD and scalar agree to the bit; and it is attention (within f16 rounding)."""
    rng = np.random.default_rng(5)
    for npos in (1, 2, 3, 15, 16, 17, 100, 700):
        for hd in (64, 128):
            k = rng.standard_normal((npos, hd)).astype(np.float32)
            v = rng.standard_normal((npos, hd)).astype(np.float32)
            q = (rng.standard_normal(hd) * rng.uniform(0.5, 4)).astype(np.float32)
            ref = _core.llm_attend("scalar", k, v, q)
            np.testing.assert_array_equal(_core.llm_attend(kernel, k, v, q), ref)
            k16, v16 = k.astype(np.float16).astype(np.float64), v.astype(np.float16)
            s = k16 @ q.astype(np.float16).astype(np.float64) / np.sqrt(hd)
            p = np.exp(s - s.max())
            exact = (p / p.sum()) @ v16.astype(np.float64)
            assert np.all(np.abs(ref - exact) <= 2e-3 * (1 + np.abs(exact))), (npos, hd)


@pytest.mark.parametrize("kernel", KERNELS)
def test_silu_equals_the_scalar_one_and_the_formula(kernel):
    x = np.concatenate(
        [np.linspace(-120, 120, 2001), np.random.default_rng(6).standard_normal(999) * 8]
    ).astype(np.float32)
    ref = _core.llm_silu("scalar", x)
    np.testing.assert_array_equal(_core.llm_silu(kernel, x), ref)
    exact = x.astype(np.float64) / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(ref, exact, rtol=1e-6, atol=1e-30)


def test_the_integer_dot_is_the_float_dot_of_the_dequantized_row():
    # The quantized-activation product differs from the exact one only by the activations'
    # 8-bit rounding: within a fraction of a percent of the row's magnitude.
    rng = np.random.default_rng(2)
    for qtype in (Q4_0, Q4_1, Q8_0):
        w = random_row(rng, qtype, 576)
        x = rng.standard_normal(576).astype(np.float32)
        exact = float(_core.dequantize(qtype, w, 576).astype(np.float64) @ x)
        scale = float(np.abs(_core.dequantize(qtype, w, 576)).sum() * np.abs(x).max())
        assert abs(_core.llm_dot(KERNELS[-1], qtype, w, x) - exact) < 0.01 * scale


@pytest.mark.parametrize("qtype", [F16, Q4_0, Q4_1, Q8_0])
def test_dequantization_equals_the_gguf_package(qtype):
    rng = np.random.default_rng(3)
    for _ in range(10):
        w = random_row(rng, qtype, 256)
        ref = gguf.quants.dequantize(w, GGUF_TYPE[qtype]).reshape(-1)
        np.testing.assert_array_equal(_core.dequantize(qtype, w, 256), ref.astype(np.float32))


def test_q8_0_quantization_equals_the_gguf_package():
    x = np.random.default_rng(4).standard_normal(4096).astype(np.float32)
    ref = gguf.quants.quantize(x.reshape(1, -1), gguf.GGMLQuantizationType.Q8_0).reshape(-1)
    got = _core.quantize_q8_0(x)
    # ggml rounds x / d half away from zero, numpy's round half to even: codes may differ
    # by one where x / d lands exactly on .5, nowhere else.
    assert got.shape == ref.shape
    np.testing.assert_allclose(
        _core.dequantize(Q8_0, got, 4096),
        gguf.quants.dequantize(ref, gguf.GGMLQuantizationType.Q8_0).reshape(-1),
        atol=0.03,
    )


def test_bad_kernel_calls_say_how_to_fix_them():
    w = np.zeros(20, np.uint8)
    with pytest.raises(errors.InvalidArgumentError, match="one row of 32 Q4_1"):
        _core.llm_dot("scalar", Q4_1, np.zeros(19, np.uint8), np.zeros(32, np.float32))
    with pytest.raises(errors.InvalidArgumentError, match="not available"):
        _core.llm_dot("avx9000", Q4_1, w, np.zeros(32, np.float32))
    with pytest.raises(errors.InvalidArgumentError, match="not supported"):
        _core.dequantize(7, w, 32)
    with pytest.raises(errors.InvalidArgumentError, match="multiple of 32"):
        _core.dequantize(Q4_1, w, 31)
    with pytest.raises(errors.InvalidArgumentError, match="dtype float32"):
        _core.llm_dot("scalar", Q4_1, w, np.zeros(32, np.float64))
    kv = np.zeros((4, 64), np.float32)
    with pytest.raises(errors.InvalidArgumentError, match="multiple of 16"):
        _core.llm_attend("scalar", np.zeros((4, 8), np.float32), np.zeros((4, 8), np.float32),
                         np.zeros(8, np.float32))  # fmt: skip
    with pytest.raises(errors.InvalidArgumentError, match=r"q \(head_dim,\)"):
        _core.llm_attend("scalar", kv, kv, np.zeros(32, np.float32))


# ---------------------------------------------------------------- the GGUF reader


def test_the_native_gguf_reader_sees_what_the_gguf_package_sees(model_path):
    ours = _core.gguf_info(str(model_path))
    ref = gguf.GGUFReader(model_path)
    assert ours["metadata"]["general.architecture"] == "llama"
    assert len(ours["tensors"]) == len(ref.tensors) == 272
    for t, r in zip(ours["tensors"], ref.tensors, strict=True):
        assert t["name"] == r.name and t["type"] == int(r.tensor_type)
        assert t["shape"] == [int(d) for d in r.shape] and t["offset"] == r.data_offset
        assert t["bytes"] == r.n_bytes


def test_real_tensors_dequantize_like_the_gguf_package(model_path):
    ref = gguf.GGUFReader(model_path)
    raw = np.memmap(model_path, dtype=np.uint8, mode="r")
    for t in ref.tensors:
        if t.name not in ("token_embd.weight", "blk.0.ffn_up.weight", "blk.7.attn_k.weight"):
            continue
        n = int(t.shape[0])
        rows = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1, n)
        row_bytes = t.n_bytes // rows.shape[0]
        for r in (0, 1, rows.shape[0] // 2, rows.shape[0] - 1):
            b = np.ascontiguousarray(raw[t.data_offset + r * row_bytes :][:row_bytes])
            np.testing.assert_array_equal(_core.dequantize(int(t.tensor_type), b, n), rows[r])


def test_the_native_gguf_reader_refuses_damage_and_never_crashes(model_path, tmp_path):
    """Random bytes in the header and tensor table, and truncations: each file either
    opens or is refused with CorruptFileError; the reader never reads out of bounds."""
    real = model_path.read_bytes()
    header_end = _core.gguf_info(str(model_path))["data_offset"]
    rng = random.Random(11)
    f = tmp_path / "fuzz.gguf"
    refused = 0
    for i in range(300):
        b = bytearray(real[: header_end + 4096]) if i % 3 else bytearray(real)
        if i % 5 == 0:
            b = b[: rng.randrange(0, header_end + 64)]
        else:
            for _ in range(rng.randrange(1, 8)):
                b[rng.randrange(0, header_end)] = rng.randrange(256)
        f.write_bytes(bytes(b))
        try:
            _core.gguf_info(str(f))
        except errors.CorruptFileError as e:
            refused += 1
            assert "GGUF" in str(e)
    assert refused > 100


def test_models_this_engine_cannot_run_are_clear_errors(model_path, tmp_path):
    bad = tmp_path / "short.gguf"
    bad.write_bytes(model_path.read_bytes()[:40_000_000])  # tensor data cut off
    with pytest.raises(errors.CorruptFileError, match="runs past the end"):
        _core.LlamaModel(str(bad), 512, 1)
    foreign = tmp_path / "x.gguf"
    foreign.write_bytes(b"x" * 64)
    with pytest.raises(errors.CorruptFileError, match="not a GGUF"):
        FlashEngine(str(foreign))
    with pytest.raises(errors.CorruptFileError, match="not a GGUF"):
        _core.LlamaModel(str(foreign), 512, 1)


# ---------------------------------------------------------------- the forward pass


def test_dense_mode_agrees_with_llama_cpp_on_over_a_thousand_positions(flash, model_path):
    """Dense mode follows llama.cpp's order of operations and rounding (its quantized
    products, tinyBLAS's attention products, ggml's softmax and expf): where llama.cpp was
    built for AVX-512 with llamafile (this machine's build) and we run the AVX2 set, every
    logit of every position is bit-identical. Any build: top-1 agreement at least
    llama.cpp's agreement with itself when only its KV cache's precision changes."""
    import llama_cpp

    chat = [{"role": "user", "content": "Tell me about lighthouses and their keepers."}]
    docs = [flash.tokenize(TEXT), flash.tokenize(TEXT[:600] + "\n\nSummary:")]
    docs.append(flash._prompt.tokens(chat))
    refs = {}
    for name, kv in (("f16", {}), ("f32", {"type_k": 0, "type_v": 0})):
        ref = llama_cpp.Llama(
            str(model_path), n_ctx=4096, n_threads=2, logits_all=True, verbose=False, **kv
        )
        try:
            refs[name] = []
            for toks in docs:
                ref.reset()
                ref.eval(toks)
                refs[name].append(np.asarray(ref.scores[: len(toks)]).copy())
        finally:
            ref.close()
    info = llama_cpp.llama_print_system_info().decode()
    same_order = (
        "AVX512 = 1" in info and "LLAMAFILE = 1" in info and _core.llm_kernel_active() == "avx2"
    )
    positions = ours_agree = self_agree = 0
    for toks, theirs, theirs32 in zip(docs, refs["f16"], refs["f32"], strict=True):
        ours = flash.logits(toks)
        if same_order:
            np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=1e-3)
        assert np.corrcoef(ours[-1], theirs[-1])[0, 1] > 0.99
        ours_agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
        self_agree += int((theirs32.argmax(1) == theirs.argmax(1)).sum())
        positions += len(toks)
    assert positions >= 1000
    ours, itself = ours_agree / positions, self_agree / positions
    assert ours >= 0.95 and ours >= itself - 0.01, f"top-1 agreement {ours:.4f} ({itself:.4f})"


def test_the_kv_cache_continues_a_prompt_like_one_pass(flash):
    toks = flash.tokenize(TEXT[:800])
    whole = flash.logits(toks)[-1]
    m = flash._model
    m.truncate(0)
    m.eval(np.asarray(toks[:100], np.int32))
    m.eval(np.asarray(toks[100:-1], np.int32))
    last = m.eval(np.asarray(toks[-1:], np.int32))[0]
    np.testing.assert_allclose(last, whole, rtol=1e-3, atol=2e-2)
    with pytest.raises(errors.InvalidArgumentError, match="not in the vocabulary"):
        m.eval(np.asarray([1, 10**6], np.int32))
    with pytest.raises(errors.InvalidArgumentError, match="beyond"):
        m.truncate(m.n_past + 1)
    with pytest.raises(errors.InvalidArgumentError, match="exceed the context"):
        m.eval(np.zeros(m.n_ctx, np.int32))
    m.truncate(0)


def test_a_cut_span_matches_llama_cpp_doing_the_same_cut(flash, model_path):
    """Cut a span out of the cache (a dropped memory note) and continue: the keys moved
    back are re-rotated; llama.cpp's seq_rm + seq_add on the same tokens is the reference."""
    import llama_cpp

    a, b, c, d = (flash.tokenize(t) for t in (TEXT[:300], TEXT[300:500], TEXT[500:700], " The"))
    m = flash._model
    m.truncate(0)
    m.eval(np.asarray(a + b + c, np.int32))
    m.remove(len(a), len(a) + len(b))
    assert m.n_past == len(a) + len(c)
    ours = m.eval(np.asarray(d, np.int32))[0]
    ref = llama_cpp.Llama(str(model_path), n_ctx=2048, n_threads=2, logits_all=True, verbose=False)
    try:
        ref.eval(a + b + c + d)
        uncut = np.asarray(ref.scores[ref.n_tokens - 1]).copy()
        ref.reset()
        ref.eval(a + b + c)
        ref._ctx.kv_cache_seq_rm(0, len(a), len(a) + len(b))
        ref._ctx.kv_cache_seq_shift(0, len(a) + len(b), -1, -len(b))
        ref.n_tokens = len(a) + len(c)
        ref.eval(d)
        theirs = np.asarray(ref.scores[ref.n_tokens - 1]).copy()
    finally:
        ref.close()
    assert np.corrcoef(ours, theirs)[0, 1] > 0.99
    assert int(theirs.argmax()) in np.argsort(-ours)[:5]
    # The cut happened: far closer to llama.cpp's cut than to the uncut sequence.
    assert np.abs(ours - theirs).mean() < 0.5 * np.abs(ours - uncut).mean()
    m.truncate(0)


# ---------------------------------------------------------------- FlashEngine


def test_flash_engine_streams_reuses_its_cache_and_cancels(flash):
    q = [{"role": "user", "content": "What is the capital of France?"}]
    pieces = list(flash.generate(q, max_tokens=24, temperature=0))
    st = flash.last_stats
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert st.prompt_tokens == flash.count_tokens(q) and 1 < st.generated_tokens <= 24
    assert st.ttft > 0 and st.stop_reason in ("stop", "length")
    msgs = [*q, {"role": "assistant", "content": "".join(pieces)},
            {"role": "user", "content": "And Spain?"}]  # fmt: skip
    "".join(flash.generate(msgs, max_tokens=8, temperature=0))
    st = flash.last_stats
    assert st.reused_tokens >= flash.count_tokens(q) and st.prompt_tokens - st.reused_tokens < 20
    stop = threading.Event()
    got = []
    for piece in flash.generate([{"role": "user", "content": "Write a long story."}],
                                max_tokens=200, temperature=0.8, cancel=stop):  # fmt: skip
        got.append(piece)
        if len(got) == 4:
            stop.set()
    assert flash.last_stats.cancelled and flash.last_stats.generated_tokens <= 5
    it = flash.generate(q, max_tokens=50)
    next(it)
    it.close()  # closing the iterator frees the engine for the next call
    assert list(flash.generate(q, max_tokens=4))
    with pytest.raises(errors.InvalidArgumentError, match="max_tokens"):
        flash.generate(q, max_tokens=0)
    with pytest.raises(errors.InvalidArgumentError, match="role"):
        list(flash.generate([{"role": "robot", "content": "x"}]))
    with pytest.raises(errors.InvalidArgumentError, match="context"):
        list(flash.generate([{"role": "user", "content": "word " * 5000}], max_tokens=8))


def test_flash_engine_reads_ahead_like_llama_cpp(flash):
    check_read_ahead(flash)


def test_temperature_zero_is_greedy_and_repeatable(flash):
    q = [{"role": "user", "content": "Name three colours of the rainbow."}]
    first = "".join(flash.generate(q, max_tokens=12, temperature=0))
    flash.reset()
    again = "".join(flash.generate(q, max_tokens=12, temperature=0))
    assert first == again and first.strip()
    toks = flash._prompt.tokens(q)
    best = int(flash.logits(toks)[-1].argmax())
    assert first.startswith(flash._vocab.detokenize([best]).decode("utf-8", "replace"))


def test_sampling_follows_temperature_and_the_repeat_penalty():
    rng = np.random.default_rng(0)
    logits = np.zeros(100, np.float32)
    logits[7], logits[8] = 5.0, 4.9
    assert sample(logits, [], 0.0, rng) == 7
    assert sample(logits, [7], 0.0, rng) == 8  # 7 penalized: 5.0 / 1.1 < 4.9
    draws = {sample(logits, [], 1.0, rng) for _ in range(200)}
    assert draws == {7, 8}  # top-p keeps the two near-equal tokens, min-p drops the rest


def test_open_engine_chooses_the_engine_by_name(monkeypatch):
    e = open_engine(engine="flash", n_ctx=1024)
    assert isinstance(e, FlashEngine) and open_engine(engine="flash", n_ctx=1024) is e
    monkeypatch.setenv("LOCALMEM_ENGINE", "flash")
    assert open_engine(n_ctx=1024) is e
    with pytest.raises(errors.InvalidArgumentError, match="unknown engine"):
        open_engine(engine="vllm")
    e.close()


# ---------------------------------------------------------------- streaming (LLM in a flash)


@pytest.fixture(scope="module")
def bundle(model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "model.ffn"
    _core.build_ffn_bundle(str(model_path), str(out))
    return out


def test_the_bundle_holds_each_neurons_up_row_and_down_column(model_path, bundle):
    ref = gguf.GGUFReader(model_path)
    t = {x.name: x for x in ref.tensors}
    raw = bundle.read_bytes()
    up_bytes, bb, n_ff, n_embd = 360, 1024, 1536, 576
    for layer in (0, 17, 29):
        up = np.asarray(t[f"blk.{layer}.ffn_up.weight"].data).reshape(n_ff, -1)
        down = gguf.quants.dequantize(
            t[f"blk.{layer}.ffn_down.weight"].data, t[f"blk.{layer}.ffn_down.weight"].tensor_type
        ).reshape(n_embd, n_ff)
        for i in (0, 1, 777, n_ff - 1):
            off = 4096 + (layer * n_ff + i) * bb
            b = np.frombuffer(raw[off : off + bb], np.uint8)
            np.testing.assert_array_equal(b[:up_bytes], up[i].view(np.uint8).reshape(-1))
            col = _core.dequantize(Q8_0, np.ascontiguousarray(b[up_bytes : up_bytes + 612]), 576)
            assert np.abs(col - down[:, i]).max() <= np.abs(down[:, i]).max() / 100
            assert not b[up_bytes + 612 :].any()  # padding


def test_a_damaged_or_truncated_bundle_is_a_clear_error(model_path, bundle, tmp_path):
    good = bundle.read_bytes()
    cases = {
        "header": good[:100] + bytes([good[100] ^ 1]) + good[101:],
        "layer": good[:5_000_000] + bytes([good[5_000_000] ^ 1]) + good[5_000_001:],
        "truncated": good[:-1024],
        "empty": b"",
    }
    for name, data in cases.items():
        f = tmp_path / f"{name}.ffn"
        f.write_bytes(data)
        m = _core.LlamaModel(str(model_path), 256, 1)
        with pytest.raises(errors.CorruptFileError, match="rebuilt from the GGUF"):
            m.enable_streaming(str(f), False, 1.0)


@pytest.mark.parametrize("rule", [0, 1])
def test_every_neuron_in_neuron_mode_reproduces_the_dense_model(model_path, bundle, flash, rule):
    toks = np.asarray(flash.tokenize(TEXT[:400]), np.int32)
    dense = flash.logits(toks)
    m = _core.LlamaModel(str(model_path), 512, 2)
    m.enable_streaming(str(bundle), True, 1.0, rule)
    streamed = m.eval(toks, all_logits=True)
    # Only the down columns' requantization to Q8_0 differs.
    assert (streamed.argmax(1) == dense.argmax(1)).mean() >= 0.85
    assert min(np.corrcoef(a, b)[0, 1] for a, b in zip(streamed, dense, strict=True)) > 0.99
    st = m.stream_stats()
    assert st["neurons_active"] == st["neurons_read"] == len(toks) * 30 * 1536
    assert st["bytes_read"] == len(toks) * st["streamed_bytes_per_token"]


def test_neuron_mode_uses_half_the_neurons_and_its_cache_cuts_the_reads(model_path, bundle):
    from localmem.machine import io_read_bytes

    toks = np.asarray(flash_tokens(model_path), np.int32)
    missing = {}
    for cache, bias in ((0, 0.0), (768, 0.0), (768, 0.3)):
        m = _core.LlamaModel(str(model_path), 512, 2)
        m.enable_streaming(str(bundle), True, 0.5, 0, cache, bias)
        m.eval(toks[:32])  # warm: weights that stay resident paged in
        m.reset_stream_stats()
        io0 = io_read_bytes()
        for t in toks[32:96]:
            m.eval(np.asarray([t], np.int32))
        st = m.stream_stats()
        io = io_read_bytes() - io0
        assert st["neurons_active"] == st["token_layers"] * 768  # exactly the top half
        # The engine's own count is what the kernel saw read (O_DIRECT: no page cache).
        assert st["bytes_read"] <= io <= st["bytes_read"] * 1.1 + (1 << 20)
        # Missing neurons that lie close together come in one read, gaps included.
        assert st["neurons_read"] >= st["neurons_missing"] and st["reads"] < st["neurons_missing"]
        missing[cache, bias] = st["neurons_missing"] / st["neurons_active"]
    assert missing[0, 0.0] == 1.0  # no cache: every active neuron is read
    m = _core.LlamaModel(str(model_path), 512, 2)
    m.enable_streaming(str(bundle), True, 0.5, 0, 768, 0.3, True)
    m.eval(toks[:8])
    trace = m.stream_trace()
    assert len(trace) == 8 * 30 and {lay for lay, *_ in trace} == set(range(30))
    for _, _, active, miss in trace:
        assert len(active) == 768 and set(miss) <= set(active)
    assert missing[768, 0.0] < 0.6  # most were cached from the tokens before
    assert missing[768, 0.3] < missing[768, 0.0]  # cache-aware choice: fewer reads still
    with pytest.raises(errors.InvalidArgumentError, match="keep"):
        _core.LlamaModel(str(model_path), 256, 1).enable_streaming(str(bundle), True, 0.0)
    with pytest.raises(errors.InvalidArgumentError, match="rule"):
        _core.LlamaModel(str(model_path), 256, 1).enable_streaming(str(bundle), True, 0.5, 7)


def flash_tokens(model_path: Path) -> list[int]:
    from localmem.llm.prompt import open_vocab

    return open_vocab(model_path).tokenize(TEXT.encode(), False, False)


def test_the_flash_engine_runs_in_neuron_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCALMEM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(errors.InvalidArgumentError, match="sparsity"):
        FlashEngine(n_ctx=512, sparsity=1.5)
    with pytest.raises(errors.InvalidArgumentError, match="neuron_rule"):
        FlashEngine(n_ctx=512, sparsity=0.5, neuron_rule="magic")
    with pytest.raises(errors.InvalidArgumentError, match="not both"):
        FlashEngine(n_ctx=512, sparsity=0.5, memory_budget="60%")
    e = FlashEngine(n_ctx=512, sparsity=0.5)
    try:
        x = e.load_stats.extra
        assert x["mode"] == "neuron" and x["neuron_rule"] == "activation"
        assert Path(x["bundle"]).exists()
        q = [{"role": "user", "content": "What is the capital of France?"}]
        assert "".join(e.generate(q, max_tokens=12, temperature=0)).strip()
        assert e.stream_stats()["neurons_active"] > 0
        bundle_path = Path(x["bundle"])
    finally:
        e.close()
    bundle_path.write_bytes(bundle_path.read_bytes()[:-4096])  # damaged: rebuilt on open
    e = FlashEngine(n_ctx=512, sparsity=0.5)
    e.close()
    assert bundle_path.stat().st_size % 512 == 0 and bundle_path.stat().st_size > 40_000_000
