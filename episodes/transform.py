"""The fitted front-end of a prepared benchmark, replayable on new items: :class:`FeatureTransform`.

:func:`episodes.prepare.prepare_benchmark` and :func:`episodes.features.compact_benchmark` record,
per modality, the steps that turned raw values into the benchmark's feature rows, in
``bench.info["transform"][modality]``::

    {"frontend": {FrontendSettings fields},
     "steps": [
        {"op": "frontend"},                       # text -> byte ids, audio -> log-mel, image -> pixels
        {"op": "embed", "backbone": NAME, "key": {...}, "dim": D},   # or a frozen backbone instead
        {"op": "standardize", "mean": float [1, D], "std": float [1, D]},
        {"op": "ngrams", "dim": 1024, "orders": [1, 2, 3]},          # byte ids -> hashed n-grams
        {"op": "audio-compact", "words": K, "codebook": {"mu", "sd", "centers"} | None},
        ...]}

Everything is a tensor or a plain type, so the record travels inside a checkpoint (loaded with
``weights_only=True``) and a trained run can embed new items without its training data, its
feature cache or a refit: statistics, codebooks and n-gram settings are the ones fitted on the
meta-train classes. Replaying the steps on the training items gives the benchmark's rows (up to
the rounding of batched matrix products in the codebook distances and in a backbone).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Mapping, Sequence

import torch

from episodes.data import Item
from episodes.errors import DataError
from episodes.frontends import FrontendSettings

__all__ = ["FeatureTransform", "initial_state", "STEP_OPS"]

STEP_OPS = ("frontend", "embed", "standardize", "ngrams", "audio-compact")


def initial_state(frontend: FrontendSettings, *, embedder: Any = None) -> dict[str, Any]:
    """The record of a modality right after its front-end (or frozen backbone)."""
    if embedder is None:
        step: dict[str, Any] = {"op": "frontend"}
    else:
        step = {"op": "embed", "backbone": str(embedder.name), "key": _plain(embedder.cache_key()),
                "dim": int(embedder.dim)}
    return {"frontend": asdict(frontend), "steps": [step]}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


class FeatureTransform:
    """Raw values of one modality -> the feature rows a run was trained on.

    Args:
        modality: ``text`` / ``image`` / ``audio``.
        state: the modality's record (module docstring); ``None`` or no steps: values already
            are feature rows (e.g. the ``synthetic`` benchmark's vectors).
        embedder: the frozen backbone an ``embed`` step needs (an
            :class:`episodes.embedding.Embedder` whose ``cache_key()`` must equal the recorded
            one: same weights, same settings).

    Raises:
        DataError: a malformed record, a missing or different backbone.
    """

    def __init__(self, modality: str, state: Mapping[str, Any] | None, *, embedder: Any = None) -> None:
        self.modality = modality
        self.state = dict(state or {})
        steps = self.state.get("steps") or []
        if not isinstance(steps, list) or any(not isinstance(s, Mapping) or s.get("op") not in STEP_OPS for s in steps):
            raise DataError(f"{modality} front-end record: malformed steps (expected ops among {', '.join(STEP_OPS)})")
        self.steps = [dict(s) for s in steps]
        try:
            self.frontend = replace(FrontendSettings(), **dict(self.state.get("frontend") or {}))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{modality} front-end record: bad front-end settings ({exc})") from None
        self.embedder = embedder
        need = next((s for s in self.steps if s["op"] == "embed"), None)
        if need is not None:
            if embedder is None:
                raise DataError(f"{modality}: the run was trained on {need['backbone']} embeddings; that backbone "
                                "is needed to embed new items")
            if _plain(embedder.cache_key()) != need.get("key"):
                raise DataError(f"{modality}: backbone {embedder.name} differs from the one the run was trained "
                                f"with (weights or settings: {need.get('key')} vs {_plain(embedder.cache_key())}); "
                                "pass the same weights")

    @property
    def backbone(self) -> str | None:
        """The frozen backbone's name, when the run used one for this modality."""
        step = next((s for s in self.steps if s["op"] == "embed"), None)
        return None if step is None else str(step["backbone"])

    def __call__(self, values: Sequence[Any], *, skip_bad: bool = False,
                 ids: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ``values`` (text strings; image / audio file paths or decoded arrays).

        Returns:
            ``(features [n, *shape], ok bool [n])``; ``ok`` is all true without ``skip_bad``.

        Raises:
            DataError: an unreadable item (names the file) without ``skip_bad``; no values.
        """
        from episodes.modality_features import compute_features

        values = list(values)
        n = len(values)
        if not self.steps:  # the values are the features
            x = torch.stack([torch.as_tensor(v) for v in values]) if n else torch.zeros(0)
            return x, torch.ones(n, dtype=torch.bool)
        ids = list(ids) if ids is not None else [str(i) for i in range(n)]
        items = [Item(id=i, label="?", modalities={self.modality: v}) for i, v in zip(ids, values)]
        x: torch.Tensor | None = None
        ok = torch.ones(n, dtype=torch.bool)
        for step in self.steps:
            op = step["op"]
            if op in ("frontend", "embed"):
                emb = self.embedder if op == "embed" else None
                x, ok, _ = compute_features("predict", self.modality, items, self.frontend, cache=None,
                                            skip_bad=skip_bad, embedder=emb)
            elif op == "standardize":
                x = (x - step["mean"].to(x.dtype)) / step["std"].to(x.dtype)
            elif op == "ngrams":
                from episodes.features import _bytes_to_text, text_ngram_features

                texts = [str(v) for v in values] if step.get("from") == "text" else _bytes_to_text(x)
                x = text_ngram_features(texts, dim=int(step["dim"]), orders=tuple(int(o) for o in step["orders"]))
            elif op == "audio-compact":
                from episodes.features import audio_bow_encode, audio_stat_features

                parts = [audio_stat_features(x)]
                if step.get("codebook") is not None:
                    parts.append(audio_bow_encode(x, step["codebook"]))
                x = torch.cat(parts, dim=1)
        assert x is not None
        return x, ok

    def describe(self) -> str:
        """One line: the steps (``ngrams(1024)``, ``efficientnet-lite0 -> standardize``, ...)."""
        out = []
        for s in self.steps:
            if s["op"] == "embed":
                out.append(str(s["backbone"]))
            elif s["op"] == "ngrams":
                out.append(f"ngrams({s['dim']})")
            elif s["op"] == "audio-compact":
                out.append(f"logmel-stats+boaw({s.get('words', 0)})")
            else:
                out.append(s["op"])
        return " -> ".join(out) or "identity"
