"""Shared encoder body for **sequence** features (byte ids, log-mel frames): the domain-adaptation
baselines' encoders when the front-end is ``sequence`` (the ``paper`` preset).

A ``cnn1d`` encoder is ``[embedding] -> L x (conv1d -> LayerNorm -> act) -> masked mean+max pool
-> linear``. Here it is cut after its first conv layer:

* **stem** (per modality, *not* shared; module name ``input`` as in the vector case): the
  modality's own front, byte embedding (text) or nothing (frames), then the first
  ``conv1d(k, stride) -> LayerNorm -> act`` mapping that modality's channels (16-d byte
  embeddings, 40 mel bands) to ``channels`` per time step, with the padding mask of byte ids;
* **body** (one module, the *same* parameters for both modalities; module name ``body``): the
  remaining ``layers - 1`` conv layers over that common ``[B, T', channels]`` sequence space,
  the masked mean+max pool and the projection to the joint space.

Shared: every parameter of ``body`` (conv weights/biases and LayerNorms of layers 2..L, the output
projection). Per modality: the stem (byte embedding + first conv + its LayerNorm for text; first
conv + LayerNorm for audio), and, as for every model, the target-side ``align`` layer; the
episode classifier is shared by construction. With the ``cnn1d`` defaults (32 channels, 3 layers,
kernel 5, stride 2) both modalities meet at 32 channels after one stride-2 conv. The hyper-
parameters are the source modality's ``cnn1d`` ones from ``model.encoder_hp`` (defaults
otherwise); whatever encoder the other methods use for sequences (``cnn1d`` or ``lstm``), the
shared-body baselines use this ``cnn1d`` split.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from croma.encoders.mlp import make_activation
from croma.encoders.sequence import BYTE_VOCAB, conv1d_taps, masked_mean_max

BODY_HP = ("channels", "layers", "kernel_size", "stride", "norm", "activation")
DEFAULTS: dict[str, Any] = dict(channels=32, layers=3, kernel_size=5, stride=2, norm=True, activation="gelu", embed_dim=16)


def is_sequence(features: torch.Tensor) -> bool:
    """Byte ids ``long [N, L]`` or frames ``float [N, C, T]``."""
    if features.dtype.is_floating_point:
        return features.dim() == 3
    return features.dim() == 2


class _ConvStack(nn.Module):
    """``n`` x (channels-last conv1d -> LayerNorm -> act), re-zeroing padding after each."""

    def __init__(self, in_ch: int, channels: int, n: int, kernel_size: int, stride: int, norm: bool, activation: str) -> None:
        super().__init__()
        self.stride = stride
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(n):
            self.convs.append(nn.Conv1d(in_ch, channels, kernel_size, stride=stride, padding=kernel_size // 2))
            self.norms.append(nn.LayerNorm(channels) if norm else nn.Identity())
            in_ch = channels
        self.act = make_activation(activation)

    def run(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv, norm in zip(self.convs, self.norms):
            h = self.act(norm(conv1d_taps(h, conv.weight, conv.bias, self.stride)))
            mask = mask[:, :: self.stride]
            h = h * mask.unsqueeze(-1)
        return h, mask


class SequenceStem(_ConvStack):
    """Per-modality front: ``long [B, L]`` / ``float [B, C, T]`` -> ``([B, T', channels], mask [B, T'])``."""

    def __init__(self, input_shape: tuple[int, ...], *, channels: int, kernel_size: int, stride: int, norm: bool,
                 activation: str, embed_dim: int = 16) -> None:
        self.is_bytes = len(input_shape) == 1
        in_ch = embed_dim if self.is_bytes else int(input_shape[0])
        super().__init__(in_ch, channels, 1, kernel_size, stride, norm, activation)
        self.embedding = nn.Embedding(BYTE_VOCAB, embed_dim) if self.is_bytes else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.convs[0].weight.dtype
        if self.embedding is not None:
            ids = x.long()
            mask = (ids != 0).to(dtype)
            h = self.embedding(ids) * mask.unsqueeze(-1)  # [B, L, E]
        else:
            h = x.to(dtype).transpose(1, 2)  # [B, T, C]
            mask = torch.ones_like(h[:, :, 0])
        return self.run(h, mask)


class SequenceBody(_ConvStack):
    """Shared body: ``([B, T, channels], mask)`` -> ``layers - 1`` convs -> masked mean+max -> ``[B, out_dim]``."""

    def __init__(self, out_dim: int, *, channels: int, layers: int, kernel_size: int, stride: int, norm: bool,
                 activation: str) -> None:
        super().__init__(channels, channels, layers - 1, kernel_size, stride, norm, activation)
        self.proj = nn.Linear(2 * channels, out_dim)
        self.out_dim = out_dim

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, mask = self.run(h, mask)
        return self.proj(masked_mean_max(h.transpose(1, 2), mask))


class SharedSequenceEncoder(nn.Module):
    """``x -> input (own stem) -> body (shared) -> [B, E]``."""

    def __init__(self, stem: SequenceStem, body: SequenceBody) -> None:
        super().__init__()
        self.input = stem
        self.body = body
        self.out_dim = body.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(*self.input(x))


def sequence_hp(model_cfg: dict[str, Any], modality: str) -> dict[str, Any]:
    """``cnn1d`` hyper-parameters of ``modality`` from ``model.encoder_hp`` over the defaults."""
    given = dict(((model_cfg.get("encoder_hp") or {}).get(modality) or {}))
    hp = {k: given.get(k, v) for k, v in DEFAULTS.items()}
    if int(hp["layers"]) < 1 or int(hp["channels"]) < 1 or int(hp["stride"]) < 1 or int(hp["kernel_size"]) % 2 == 0:
        raise ValueError(f"shared sequence body: bad cnn1d settings {hp} (layers, channels, stride >= 1; odd kernel)")
    return hp


def shared_sequence_encoders(bench, model_cfg: dict[str, Any], embed: int) -> dict[str, SharedSequenceEncoder]:
    """One stem per modality + one body, built in this order (the caller seeds the RNG)."""
    src, tgt = bench.source, bench.target
    hp = sequence_hp(model_cfg, src)
    body_kw = {k: hp[k] for k in BODY_HP}
    body = SequenceBody(embed, **body_kw)
    stem_kw = {k: hp[k] for k in BODY_HP if k != "layers"}
    encoders = {}
    for m in (src, tgt):
        emb = int(sequence_hp(model_cfg, m)["embed_dim"])
        stem = SequenceStem(tuple(bench.data[m].features.shape[1:]), embed_dim=emb, **stem_kw)
        encoders[m] = SharedSequenceEncoder(stem, body)
    return encoders


def extra_sequence_encoder(bench, model_cfg: dict[str, Any], modality: str, body: SequenceBody) -> SharedSequenceEncoder:
    """The encoder of an extra modality (a benchmark with more than two): its own stem (the source's
    ``cnn1d`` settings, as the target's stem; its own byte-embedding width) on the shared ``body``."""
    hp = sequence_hp(model_cfg, bench.source)
    stem_kw = {k: hp[k] for k in BODY_HP if k != "layers"}
    emb = int(sequence_hp(model_cfg, modality)["embed_dim"])
    return SharedSequenceEncoder(SequenceStem(tuple(bench.data[modality].features.shape[1:]), embed_dim=emb, **stem_kw), body)
