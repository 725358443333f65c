"""The GGUF models already on this machine, found where other tools keep them — used where
they lie, never copied (a 3B model is 2 GB; a second copy helps nobody).

- Ollama: ``$OLLAMA_MODELS`` or ``~/.ollama/models`` (and a system service's
  ``/usr/share/ollama/.ollama/models``); a manifest per ``name:tag`` names the blob holding
  the weights (``application/vnd.ollama.image.model``).
- LM Studio: ``~/.lmstudio/models`` and the older ``~/.cache/lm-studio/models``.
- The Hugging Face cache: ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``
  (``models--org--repo/snapshots/REV/...gguf``).
- ``$LOCALMEM_MODELS``: folders of the user's own (``os.pathsep``-separated).

Each is described from its GGUF header alone (``gguf.read_metadata``: the pages of the
header, not the weights): architecture, quantization, parameters, and which of our engines
can run it. Files that are not GGUF chat models (embeddings, projectors, damaged files)
are listed with the reason, not hidden, so that a user can tell why one is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localmem.errors import LocalmemError

MODELS_ENV = "LOCALMEM_MODELS"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few hundred bytes; a larger file is not one
MAX_WALK_FILES = 100_000  # per folder: a models folder is not a whole disk

# llama.cpp's llama_ftype: the file's predominant tensor type.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip
# What the flash engine's kernels read (csrc/core/llm/gguf_file.h), for a llama model.
FLASH_FILE_TYPES = {"F32", "F16", "Q4_0", "Q4_1", "Q8_0"}
# Architectures that are not chat models (encoders, projectors): llama.cpp loads them, but
# not to chat with.
NOT_CHAT = {"bert", "nomic-bert", "jina-bert-v2", "t5encoder", "clip"}


@dataclass
class InstalledModel:
    """One GGUF file found on this machine."""

    name: str  # what --model takes: "llama3.2:3b" (Ollama), "org/repo/file.gguf", ...
    path: Path
    source: str  # "ollama", "lm-studio", "hf-cache", "LOCALMEM_MODELS", "embedded"
    size: int
    architecture: str = ""
    quantization: str = ""
    parameters: str = ""  # general.size_label when the file says ("3B", "135M")
    chat_template: bool = False
    problem: str = ""  # why it cannot chat ("" when it can)
    engines: list[str] = field(default_factory=list)  # engines that can run it

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def describe(name: str, path: Path, source: str) -> InstalledModel:
    """A model from its GGUF header; ``problem`` says why it cannot be chatted with."""
    from localmem.llm import gguf

    try:
        size = path.stat().st_size
    except OSError as e:
        return InstalledModel(name, path, source, 0, problem=f"unreadable: {e.strerror}")
    m = InstalledModel(name, path, source, size)
    try:
        meta = gguf.read_metadata(path)
    except LocalmemError as e:
        m.problem = f"not a readable GGUF file ({str(e).split(': ', 1)[-1]})"
        return m
    m.architecture = str(meta.get("general.architecture", ""))
    ft = meta.get("general.file_type")
    m.quantization = FILE_TYPES.get(ft, f"type {ft}") if isinstance(ft, int) else ""
    m.parameters = str(meta.get("general.size_label", "") or "")
    m.chat_template = bool(meta.get("tokenizer.chat_template"))
    if m.architecture in NOT_CHAT or meta.get("general.type") in ("mmproj", "adapter"):
        m.problem = f"a {meta.get('general.type') or m.architecture} model, not a chat model"
    elif not m.chat_template:
        m.problem = (
            "no chat template in its metadata (a base model, not instruction-tuned; "
            "LlamaCppEngine(chat_template=...) can still run it)"
        )
    else:
        m.engines = ["llama"]
        if m.architecture == "llama" and m.quantization in FLASH_FILE_TYPES:
            m.engines.append("flash")
    return m


def installed(*, home: Path | None = None) -> list[InstalledModel]:
    """Every GGUF model found (embedded ones first), each once (the same file found twice,
    through a link or two sources, is listed under its first name)."""
    return [describe(*found) for found in _found(home)]


def find(name: str, *, home: Path | None = None) -> InstalledModel | None:
    """The installed model called ``name`` (as ``localmem models`` lists it; a unique file
    name or stem will do), or None. Only the match's header is read."""
    found = list(_found(home))
    hit = [f for f in found if f[0] == name]
    if not hit:
        hit = [f for f in found if name in (f[1].name, f[1].stem, f[0].split("/")[-1])]
    if not hit and ":" not in name:  # Ollama's default tag
        hit = [f for f in found if f[2] == "ollama" and f[0] == f"{name}:latest"]
    return describe(*hit[0]) if len(hit) == 1 else None


def _found(home: Path | None) -> Iterator[tuple[str, Path, str]]:
    """(name, path, source) of every GGUF file where tools keep them, each file once."""
    from localmem import registry

    seen: set[tuple[int, int]] = set()

    def first(name: str, path: Path, source: str) -> Iterator[tuple[str, Path, str]]:
        try:
            st = path.stat()
        except OSError:
            return
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            yield name, path, source

    for key, spec in registry.registry()["models"].items():
        if spec.get("kind") != "llm":
            continue
        try:
            path = registry.asset(spec["model"]).path()
        except LocalmemError:
            continue  # not installed: `doctor` says so
        yield from first(key, path, "embedded")
    h = home or Path.home()
    for name, path in _ollama(h):
        yield from first(name, path, "ollama")
    for root in (h / ".lmstudio" / "models", h / ".cache" / "lm-studio" / "models"):
        for path in _ggufs(root):
            yield from first(path.relative_to(root).as_posix(), path, "lm-studio")
    for name, path in _hf_cache(h):
        yield from first(name, path, "hf-cache")
    for folder in filter(None, os.environ.get(MODELS_ENV, "").split(os.pathsep)):
        root = Path(folder).expanduser()
        for path in _ggufs(root):
            yield from first(path.relative_to(root).as_posix(), path, MODELS_ENV)


# ---------------------------------------------------------------- where tools keep them


def _ggufs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    n = 0
    for dirpath, dirnames, files in os.walk(root, followlinks=False):
        dirnames.sort()
        for f in sorted(files):
            n += 1
            if n > MAX_WALK_FILES:
                return
            if f.lower().endswith(".gguf"):
                yield Path(dirpath) / f


def _ollama(home: Path) -> Iterator[tuple[str, Path]]:
    roots = [Path(os.environ["OLLAMA_MODELS"])] if os.environ.get("OLLAMA_MODELS") else []
    roots += [home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]
    for root in roots:
        manifests = root / "manifests"
        if not manifests.is_dir():
            continue
        for dirpath, _, files in os.walk(manifests):
            for tag in sorted(files):
                path = Path(dirpath) / tag
                blob = _ollama_blob(root, path)
                if blob is None:
                    continue
                # manifests/HOST/NAMESPACE/MODEL/TAG; the default host and "library" drop out
                parts = path.relative_to(manifests).parts
                host, rest = parts[0], parts[1:-1]
                if host == "registry.ollama.ai" and rest[:1] == ("library",):
                    rest = rest[1:]
                prefix = "" if host == "registry.ollama.ai" else host + "/"
                yield f"{prefix}{'/'.join(rest)}:{tag}", blob


def _ollama_blob(root: Path, manifest: Path) -> Path | None:
    """The weights' blob a manifest names, if it is there (a damaged or foreign manifest is
    skipped: it is Ollama's file, not ours to judge)."""
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        digest = next(
            layer["digest"]
            for layer in doc["layers"]
            if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER
        )
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        return None
    hexpart = digest.split(":", 1)[1]
    if len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        return None  # a digest is hex: nothing else may steer the path
    blob = root / "blobs" / f"sha256-{hexpart}"
    return blob if blob.is_file() else None


def _hf_cache(home: Path) -> Iterator[tuple[str, Path]]:
    if os.environ.get("HF_HUB_CACHE"):
        hub = Path(os.environ["HF_HUB_CACHE"])
    elif os.environ.get("HF_HOME"):
        hub = Path(os.environ["HF_HOME"]) / "hub"
    else:
        hub = home / ".cache" / "huggingface" / "hub"
    if not hub.is_dir():
        return
    for repo in sorted(hub.glob("models--*")):
        org_repo = repo.name[len("models--") :].replace("--", "/")
        for snap in sorted((repo / "snapshots").glob("*")):
            for path in _ggufs(snap):
                yield f"{org_repo}/{path.relative_to(snap).as_posix()}", path
