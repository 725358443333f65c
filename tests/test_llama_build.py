"""llama.cpp is built for the CPU family, never for the build machine, and a llama.cpp that
crashes here is reported, never the end of the process that asked (issue 20)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localmem import build_info
from localmem.errors import EngineCrashError
from localmem.llm import FlashEngine, LlamaCppEngine, open_engine, probe

ROOT = Path(__file__).resolve().parents[1]
AMX = re.compile(
    r"\b(ldtilecfg|sttilecfg|tileloadd|tileloaddt1|tilestored|tilezero|tilerelease|tdpb\w*)\b"
)
CRASH = "llama:load@SIGILL"  # the test hook: llama.cpp dies of SIGILL as it loads a model


def localmem_exe() -> str:
    beside = Path(sys.executable).parent / "localmem"
    exe = str(beside) if beside.exists() else shutil.which("localmem")
    assert exe, "the localmem console script is not installed"
    return exe


@pytest.fixture
def fresh_probe(monkeypatch):
    """No probe result from an earlier test of this process."""
    monkeypatch.setattr(probe, "_memo", {})


def test_installed_llama_cpp_has_no_amx_instructions():
    # AMX is what crashed (SIGILL in ggml_backend_amx_mul_mat): a build compiled with
    # -march=native on a Xeon that reports it carries hundreds of tile instructions.
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils, installed with gcc) is needed to read the libraries"
    libs = [p for p in probe.libraries() if not p.is_symlink()]
    assert any(p.name.startswith("libggml-cpu") for p in libs), libs
    for lib in libs:
        out = subprocess.run(
            [objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        found = sorted({m.group(1) for m in AMX.finditer(out.stdout)})
        assert not found, f"{lib.name} contains AMX instructions {found}: {probe.REINSTALL}"


def test_llama_cpp_was_built_portable_for_a_cpu_this_one_runs():
    # The build's own record (ggml-config.cmake, installed beside the package) says
    # GGML_NATIVE; llama.cpp's system info says which instruction sets it was compiled with.
    options = probe.recorded_options()
    assert options.get("GGML_NATIVE") == "OFF", options.get("GGML_NATIVE")
    assert options.get("GGML_AVX2") == "ON" and options.get("GGML_AMX_INT8") == "OFF"
    out = subprocess.run(
        [sys.executable, "-c", "from localmem.llm import probe; b = probe.installed_build(); "
         "print(' '.join(b.features)); print(probe.build_problems(b))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    features, problems = out.stdout.splitlines()
    assert "AVX2" in features.split() and not any(f.startswith("AMX") for f in features.split())
    assert problems == "[]"


def test_build_problems_name_a_native_or_amx_build():
    native = probe.LlamaBuild("0", ["AVX2", "AMX_INT8"], {"GGML_NATIVE": "ON"})
    problems = probe.build_problems(native)
    assert any("-march=native" in p for p in problems)
    assert any("AMX_INT8" in p for p in problems)
    assert probe.build_problems(probe.LlamaBuild("0", ["AVX2"], {"GGML_NATIVE": "OFF"})) == []
    assert probe.system_features("CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 0 | ") == ["SSE3", "AVX2"]


def test_our_extension_is_not_built_for_this_machine_only():
    info = build_info()
    assert info["march_native"] is False
    assert info["cxx_flags"], "the build records its flags"
    assert "-march=native" not in info["cxx_flags"] and "-mtune=native" not in info["cxx_flags"]


def test_readme_installs_llama_cpp_portable_without_pip_cache():
    readme = (ROOT / "README.md").read_text()
    install = re.search(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    assert install
    cmd = install.group(1)
    assert f'CMAKE_ARGS="{probe.PORTABLE_CMAKE_ARGS}"' in cmd
    assert "--no-cache-dir" in cmd and "-march=native" not in cmd
    # .ci/run runs that very block: it reads the README's first two ```sh blocks.
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_probe_reports_a_crash_and_remembers_it(fresh_probe, monkeypatch, tmp_path):
    _, model = probe_model()
    monkeypatch.setenv("LOCALMEM_CRASH_AT", CRASH)
    r = probe.probe(model)
    assert r.crashed and r.signal == 4 and "SIGILL" in r.detail and not r.cached
    cache = Path(os.environ["LOCALMEM_CACHE"]) / "llama-probe.json"
    assert cache.stat().st_mode & 0o777 == 0o600
    monkeypatch.setattr(probe, "_memo", {})
    again = probe.probe(model)  # from the cache file: no child
    assert again.crashed and again.cached
    monkeypatch.delenv("LOCALMEM_CRASH_AT")
    ok = probe.probe(model, refresh=True)
    assert not ok.crashed and "AVX2 = 1" in ok.system_info and "prompt" in ok.detail


def probe_model():
    from localmem.llm.llamacpp import resolve

    return resolve(None)


def test_auto_engine_falls_back_to_flash_where_llama_cpp_crashes(fresh_probe, monkeypatch):
    monkeypatch.setenv("LOCALMEM_CRASH_AT", CRASH)
    monkeypatch.delenv("LOCALMEM_ENGINE", raising=False)
    e = open_engine(n_ctx=512)
    try:
        assert isinstance(e, FlashEngine)
        assert "SIGILL" in e.notice and "--engine flash" in e.notice
        reply = "".join(e.generate([{"role": "user", "content": "Say hi."}], max_tokens=4))
        assert reply.strip()
    finally:
        e.close()
    with pytest.raises(EngineCrashError, match="--engine flash"):
        open_engine(engine="llama", n_ctx=512)


def test_an_engine_already_open_says_why_this_call_got_it(fresh_probe, monkeypatch):
    # The flash engine one part of the process opened on request is the one "auto" gets where
    # llama.cpp crashes: the reason must be this call's (seen in CI: the chat app showed none).
    monkeypatch.delenv("LOCALMEM_ENGINE", raising=False)
    asked = open_engine(engine="flash", n_ctx=512)
    try:
        assert asked.notice == ""
        monkeypatch.setenv("LOCALMEM_CRASH_AT", CRASH)
        fallen_back = open_engine(n_ctx=512)
        assert fallen_back is asked and "SIGILL" in fallen_back.notice
        monkeypatch.delenv("LOCALMEM_CRASH_AT")
        assert open_engine(engine="flash", n_ctx=512) is asked and asked.notice == ""
    finally:
        asked.close()


def test_auto_engine_is_llama_cpp_where_it_runs(fresh_probe, monkeypatch):
    monkeypatch.delenv("LOCALMEM_ENGINE", raising=False)
    e = open_engine(n_ctx=512)
    assert isinstance(e, LlamaCppEngine) and e.notice == ""
    e.close()


def test_ask_tells_the_user_and_answers_with_flash_when_llama_cpp_crashes(tmp_path):
    env = {**os.environ, "LOCALMEM_CRASH_AT": CRASH}
    env.pop("LOCALMEM_ENGINE", None)
    ask = [localmem_exe(), "ask", "--no-remember", "--max-tokens", "6", "--temperature", "0"]
    out = subprocess.run([*ask, "Hello"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "note:" in out.stderr and "SIGILL" in out.stderr and out.stdout.strip()
    out = subprocess.run(
        [*ask, "--engine", "llama", "Hello"], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "SIGILL" in out.stderr and "--engine flash" in out.stderr
    assert "Traceback" not in out.stderr


def test_doctor_reports_a_crashing_check_and_carries_on(tmp_path):
    env = {**os.environ, "LOCALMEM_CRASH_AT": CRASH}
    out = subprocess.run([localmem_exe(), "doctor"], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    crashed = [ln for ln in lines if "FAIL chat model" in ln]
    assert crashed and "SIGILL" in crashed[0] and "--engine flash" in crashed[0], out.stdout
    for name in ("kernels", "search", "index file", "crc32c", "store", "embeddings", "llama.cpp"):
        assert any(ln.startswith(f"  ok   {name}") for ln in lines), (name, out.stdout)
    assert "SELF-CHECK FAILED" in out.stdout and "Traceback" not in out.stderr


def test_chat_app_says_why_it_runs_flash_and_what_to_do_when_llama_cpp_crashes(
    fresh_probe, monkeypatch, tmp_path
):
    import asyncio

    from localmem import Memory
    from localmem.testing import HashEmbedder
    from localmem.tui import ChatApp
    from localmem.tui.widgets import ChatMessage

    monkeypatch.setenv("LOCALMEM_CRASH_AT", CRASH)
    monkeypatch.delenv("LOCALMEM_ENGINE", raising=False)

    def system_text(app):
        return " ".join(m.source for m in app.query(ChatMessage) if m.role == "system")

    async def go(engine_name, wait):
        with Memory.open(tmp_path / engine_name, embedder=HashEmbedder(), sync="off") as mem:
            app = ChatApp(memory=mem, engine_name=None if engine_name == "auto" else engine_name)
            async with app.run_test(size=(120, 40)) as pilot:
                for _ in range(1200):
                    if wait(app):
                        break
                    await pilot.pause(0.05)
                text = system_text(app)
                engine = app._engine
            app.close()
            return text, engine

    text, engine = asyncio.run(go("auto", lambda app: app.ready.is_set()))
    assert isinstance(engine, FlashEngine)
    assert "Note:" in text and "SIGILL" in text and "--engine flash" in text
    text, engine = asyncio.run(go("llama", lambda app: "Cannot start" in system_text(app)))
    assert engine is None
    assert "Cannot start" in text and "SIGILL" in text and "--engine flash" in text
