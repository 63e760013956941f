"""``bert``: a transformers BERT-style model from a local directory + trainable projection.

No download ever happens: ``model_dir`` (CLI ``--text-model DIR``) must hold a model saved with
``save_pretrained`` (``config.json`` + weights) and, for :meth:`BertEncoder.preprocess`, its
tokenizer files. Inputs are the model's token ids ``long [B, L]`` with 0 = padding
(``[PAD]`` is id 0 in BERT vocabularies); :meth:`BertEncoder.preprocess` converts the
toolkit's byte ids (``episodes.frontends.text_to_bytes``) into them, once, before training.

The forward pass calls the model's ``embeddings`` and ``encoder`` sub-modules directly with a
4-D additive attention mask: the top-level ``forward`` of transformers models inspects the mask
in Python, which ``torch.func.vmap`` cannot batch. Dropout is off (eval mode) always.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from croma.encoders import register_encoder
from croma.errors import CromaError


def load_text_model(model_dir: str | os.PathLike | None) -> nn.Module:
    """``AutoModel.from_pretrained(model_dir, local_files_only=True)`` in eval mode.

    Raises:
        CromaError: the directory is missing or holds no loadable model.
    """
    if model_dir is None or not os.path.isdir(model_dir):
        raise CromaError(
            f"bert: model directory {str(model_dir)!r} not found; pass a local directory holding a "
            "transformers BERT model saved with save_pretrained (config.json + weights) via --text-model DIR"
        )
    try:
        from transformers import AutoModel
    except Exception as exc:  # pragma: no cover - transformers is a dependency
        raise CromaError(f"bert: transformers is not importable: {exc}") from exc
    try:
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    except Exception as exc:
        raise CromaError(f"bert: cannot load a model from {str(model_dir)!r}: " + str(exc).splitlines()[0]) from exc
    if not (hasattr(model, "embeddings") and hasattr(model, "encoder")):
        raise CromaError(f"bert: the model in {str(model_dir)!r} is not a BERT-style encoder (no embeddings/encoder)")
    return model.eval()


@register_encoder("bert")
class BertEncoder(nn.Module):
    """BERT features (``[CLS]`` or masked mean of the last layer) + linear projection.

    Args:
        input_shape: ``(L,)`` token ids.
        out_dim: output width.
        model_dir: local model directory (required).
        frozen: backbone fixed (``requires_grad=False``, run under ``no_grad``); only the
            projection trains (default True).
        pooling: ``cls`` or ``mean`` (default ``cls``).
        max_len: token length produced by :meth:`preprocess` (default 64).

    Shapes: ``long [B, L] -> [B, out_dim]``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_dim: int,
        *,
        model_dir: str | None = None,
        frozen: bool = True,
        pooling: str = "cls",
        max_len: int = 64,
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"bert: input_shape must be (L,) token ids, got {tuple(input_shape)}")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"bert: pooling must be 'cls' or 'mean', got {pooling!r}")
        self.input_shape = tuple(input_shape)
        self.out_dim = out_dim
        self.model_dir = None if model_dir is None else str(model_dir)
        self.frozen = bool(frozen)
        self.pooling = pooling
        self.max_len = int(max_len)
        from croma.backbones.embedders import local_model_dir  # a folder, or a model id in the local HF cache

        self.backbone = load_text_model(None if model_dir is None else local_model_dir(model_dir))
        if self.frozen:
            self.backbone.requires_grad_(False)
        self.proj = nn.Linear(int(self.backbone.config.hidden_size), out_dim)

    def train(self, mode: bool = True) -> "BertEncoder":
        """Train mode for the projection; the backbone stays in eval mode (no dropout)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def preprocess(self, byte_ids: torch.Tensor) -> torch.Tensor:
        """Byte ids (``long [n, L]``, byte + 1, 0 = pad) -> token ids ``long [n, max_len]``.

        Uses the tokenizer stored in ``model_dir``. Not vmap-able; call once on the data.
        Raises:
            CromaError: no tokenizer in ``model_dir``.
        """
        from transformers import AutoTokenizer

        try:
            from croma.backbones.embedders import local_model_dir

            tok = AutoTokenizer.from_pretrained(local_model_dir(self.model_dir) if self.model_dir else self.model_dir,
                                                local_files_only=True)
        except Exception as exc:
            raise CromaError(f"bert: no tokenizer in {self.model_dir!r}: " + str(exc).splitlines()[0]) from exc
        texts = []
        for row in byte_ids.long().tolist():
            data = bytes(b - 1 for b in row if b > 0)
            texts.append(data.decode("utf-8", errors="ignore"))
        enc = tok(texts, padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt")
        ids = enc["input_ids"] * enc["attention_mask"]  # padding -> 0
        return ids.long().to(byte_ids.device)

    def _features(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != 0  # [B, L]
        h = self.backbone.embeddings(input_ids=ids)  # [B, L, D]
        neg = torch.finfo(h.dtype).min
        ext = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, neg)[:, None, None, :]
        out = self.backbone.encoder(h, attention_mask=ext)
        h = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state  # [B, L, D]
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``long [B, L]`` token ids -> ``[B, out_dim]``."""
        ids = x.long()
        if self.frozen:
            with torch.no_grad():
                feats = self._features(ids)
        else:
            feats = self._features(ids)
        return self.proj(feats.to(self.proj.weight.dtype))
