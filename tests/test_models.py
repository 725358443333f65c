"""The models people already have: GGUF files in a (fake) Ollama store and Hugging Face
cache, found by ``localmem models`` and run by ``localmem ask --model NAME`` where they
lie; the files there that are not chat models, and garbage, are named with the reason."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from localmem import registry
from localmem.errors import InvalidArgumentError, ModelNotFoundError
from localmem.llm import discover
from localmem.llm.llamacpp import resolve


def localmem_exe():
    return os.path.join(os.path.dirname(sys.executable), "localmem")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home with an Ollama store and a Hugging Face cache, each holding a copy of the
    embedded model (a copy: a link would be the embedded file itself, listed once)."""
    h = tmp_path / "home"
    monkeypatch.setenv("HOME", str(h))
    for var in ("OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE", discover.MODELS_ENV):
        monkeypatch.delenv(var, raising=False)
    src = registry.asset(registry.entry(registry.default_name("llm"))["model"]).path()
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    # Ollama: manifests/HOST/NAMESPACE/MODEL/TAG -> blobs/sha256-HEX
    ollama = h / ".ollama" / "models"
    (ollama / "blobs").mkdir(parents=True)
    (ollama / "blobs" / f"sha256-{digest}").write_bytes(data)
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tinychat" / "135m"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2,
        "layers": [
            {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "0" * 64},
            {"mediaType": discover.OLLAMA_MODEL_LAYER, "digest": f"sha256:{digest}",
             "size": len(data)},
        ],
    }))  # fmt: skip
    # Hugging Face: hub/models--ORG--REPO/snapshots/REV/FILE -> ../../blobs/HASH
    repo = h / ".cache" / "huggingface" / "hub" / "models--someorg--Tiny-Chat-GGUF"
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / digest
    shutil.copyfile(src, blob)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "tiny-chat-q4_1.gguf").symlink_to(os.path.relpath(blob, snap))
    return h


def test_models_lists_ollama_and_hf_cache_models_with_what_runs_them(home):
    out = subprocess.run([localmem_exe(), "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln.strip()}
    for name in ("tinychat:135m", "someorg/Tiny-Chat-GGUF/tiny-chat-q4_1.gguf"):
        assert name in lines, out.stdout
        assert "llama" in lines[name] and "Q4_1" in lines[name] and "llama, flash" in lines[name]
    js = subprocess.run([localmem_exe(), "models", "--json"], capture_output=True, text=True,
                        timeout=120)  # fmt: skip
    found = {d["name"]: d for d in map(json.loads, js.stdout.splitlines())}
    assert found["tinychat:135m"]["source"] == "ollama"
    assert found["tinychat:135m"]["path"].startswith(str(home))  # used where it lies
    assert found["someorg/Tiny-Chat-GGUF/tiny-chat-q4_1.gguf"]["source"] == "hf-cache"


@pytest.mark.parametrize(
    "name,engine",
    [("tinychat:135m", "llama"), ("someorg/Tiny-Chat-GGUF/tiny-chat-q4_1.gguf", "flash")],
)
def test_ask_runs_a_model_found_by_name(home, tmp_path, name, engine):
    out = subprocess.run(
        [localmem_exe(), "ask", "--model", name, "--engine", engine, "--no-remember",
         "--max-tokens", "8", "--temperature", "0", "--stats", "--store", str(tmp_path / "s"),
         "Say hello."],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert f"model {name} (" in out.stderr  # the model that answered is the one named


def test_resolve_finds_by_name_and_tag_and_says_what_to_do_when_not(home):
    assert resolve("tinychat:135m")[0] == "tinychat:135m"
    assert resolve("tiny-chat-q4_1")[0] == "someorg/Tiny-Chat-GGUF/tiny-chat-q4_1.gguf"  # by stem
    with pytest.raises(ModelNotFoundError, match="localmem models"):
        resolve("llama3.2:3b")


def test_garbage_in_the_stores_is_skipped_or_named_never_a_crash(home, monkeypatch, tmp_path):
    ollama = home / ".ollama" / "models" / "manifests" / "registry.ollama.ai" / "library"
    (ollama / "broken").mkdir()
    (ollama / "broken" / "json").write_text("{not json")
    (ollama / "escape").mkdir()
    (ollama / "escape" / "1b").write_text(
        json.dumps(
            {
                "layers": [
                    {
                        "mediaType": discover.OLLAMA_MODEL_LAYER,
                        "digest": "sha256:../../../../etc/passwd",
                    }
                ]
            }
        )
    )
    (ollama / "missing").mkdir()
    (ollama / "missing" / "1b").write_text(
        json.dumps(
            {"layers": [{"mediaType": discover.OLLAMA_MODEL_LAYER, "digest": "sha256:" + "a" * 64}]}
        )
    )
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "noise.gguf").write_bytes(os.urandom(4096))
    (mine / "empty.gguf").write_bytes(b"")
    monkeypatch.setenv(discover.MODELS_ENV, str(mine))
    found = {m.name: m for m in discover.installed()}
    assert not any(n.startswith(("broken", "escape", "missing")) for n in found)
    assert "tinychat:135m" in found
    for name in ("sub/noise.gguf", "empty.gguf"):
        assert found[name].problem and not found[name].engines
    with pytest.raises(InvalidArgumentError, match="cannot chat"):
        resolve("sub/noise.gguf")
    out = subprocess.run([localmem_exe(), "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert "none: not a readable GGUF file" in out.stdout


def test_a_model_larger_than_free_memory_is_opened_with_a_warning_and_what_to_do(monkeypatch):
    from localmem import machine
    from localmem.llm import open_engine

    monkeypatch.setattr(machine, "available_memory", lambda: 50_000_000)  # 50 MB free
    monkeypatch.delenv("LOCALMEM_ENGINE", raising=False)
    e = open_engine(engine="llama", n_ctx=512)
    try:
        assert "GB of memory is free" in e.notice
        assert "--engine flash --memory-budget" in e.notice
        # Streaming under a budget is the remedy: no warning then.
        f = open_engine(engine="flash", n_ctx=512, memory_budget=0.9)
        assert f.notice == ""
        f.close()
    finally:
        e.close()
    monkeypatch.setattr(machine, "available_memory", lambda: 8_000_000_000)
    e = open_engine(engine="llama", n_ctx=512)
    assert e.notice == ""
    e.close()
