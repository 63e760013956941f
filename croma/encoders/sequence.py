"""Sequence encoders: ``cnn1d`` (fast default) and ``lstm`` (the paper's choice; slower).

Both accept either

* byte ids ``long [B, L]`` (``input_shape = (L,)``; ids 1..256, 0 = padding; an embedding
  layer is inside), or
* frames ``float [B, C, T]`` (``input_shape = (C, T)``; e.g. log-mel with ``C = n_mels``).

Padding (id 0) is masked so that appending more padding does not change the output, without
data-dependent Python branches (safe under ``vmap`` with batched parameters and ``grad``).
"""

from __future__ import annotations

import torch
from torch import nn

from croma.encoders import register_encoder
from croma.encoders.mlp import make_activation

BYTE_VOCAB = 257  # ids 1..256 = byte + 1, 0 = padding
_NEG = 1e9


def masked_mean_max(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean and max pooling over time.

    Args:
        h: ``[B, C, T]`` features.
        mask: ``[B, T]`` 1.0 = valid, 0.0 = padding.
    Returns:
        ``[B, 2C]`` (mean, max); both are 0 for an all-padding sequence.
    """
    m = mask.unsqueeze(1).to(h.dtype)  # [B, 1, T]
    count = m.sum(dim=-1)  # [B, 1]
    mean = (h * m).sum(dim=-1) / count.clamp_min(1.0)
    mx = (h - (1.0 - m) * _NEG).amax(dim=-1)
    mx = torch.where(count > 0, mx, torch.zeros_like(mx))
    return torch.cat([mean, mx], dim=-1)


def _check_shape(name: str, input_shape: tuple[int, ...]) -> bool:
    """True for byte ids ``(L,)``, False for frames ``(C, T)``; ValueError otherwise."""
    if len(input_shape) == 1:
        return True
    if len(input_shape) == 2:
        return False
    raise ValueError(f"{name}: input_shape must be (L,) byte ids or (C, T) frames, got {tuple(input_shape)}")


@register_encoder("cnn1d")
class Conv1dEncoder(nn.Module):
    """1-D CNN: [embedding] -> ``layers`` x (conv1d k, stride s -> norm -> act) -> masked
    mean+max pool -> linear.

    Args:
        input_shape: ``(L,)`` byte ids or ``(C, T)`` frames.
        out_dim: output width.
        channels: conv width (default 32; 64 costs ~1.8x on CPU).
        layers: number of conv layers (default 3).
        kernel_size: odd kernel size (default 5).
        stride: stride of every conv (default 2).
        embed_dim: byte-embedding width (byte ids only; default 16).
        vocab_size: number of token ids incl. padding 0 (default 257).
        norm: per-position LayerNorm over channels after each conv (default True).
        activation: ``gelu`` | ``relu`` | ``tanh``.
        conv: ``taps`` (default: :func:`conv1d_taps`, ``k`` strided matmuls; the arithmetic every
            stored result was made with) or ``native`` (``F.conv1d``; under ``vmap`` with per-task
            weights PyTorch runs it as ONE grouped convolution across the tasks, ``groups = T``).
            ``native`` is ~15-25 % faster (encoder forward+backward, whole meta-batch) on one CPU thread, batched and
            sequential alike, but rounds differently (opt-in; see ``croma bench meta --benchmark``).

    Shapes: ``long [B, L]`` or ``float [B, C, T]`` -> ``[B, out_dim]``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_dim: int,
        *,
        channels: int = 32,
        layers: int = 3,
        kernel_size: int = 5,
        stride: int = 2,
        embed_dim: int = 16,
        vocab_size: int = BYTE_VOCAB,
        norm: bool = True,
        activation: str = "gelu",
        conv: str = "taps",
    ) -> None:
        super().__init__()
        self.is_bytes = _check_shape("cnn1d", input_shape)
        if conv not in CONV_IMPLS:
            raise ValueError(f"cnn1d: conv must be one of {', '.join(CONV_IMPLS)}, got {conv!r}")
        self.conv = conv
        if layers < 1 or channels < 1 or stride < 1:
            raise ValueError(f"cnn1d: layers, channels and stride must be >= 1, got {layers}, {channels}, {stride}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"cnn1d: kernel_size must be odd, got {kernel_size}")
        self.input_shape = tuple(input_shape)
        self.out_dim = out_dim
        self.stride = stride
        if self.is_bytes:
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            in_ch = embed_dim
        else:
            self.embedding = None
            in_ch = input_shape[0]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(layers):
            self.convs.append(nn.Conv1d(in_ch, channels, kernel_size, stride=stride, padding=kernel_size // 2))
            self.norms.append(nn.LayerNorm(channels) if norm else nn.Identity())  # per position
            in_ch = channels
        self.act = make_activation(activation)
        self.proj = nn.Linear(2 * channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``long [B, L]`` or ``float [B, C, T]`` -> ``[B, out_dim]``.

        Works channels-last (``[B, T, C]``); each conv is ``conv`` (default a sum of
        ``kernel_size`` strided matmuls, :func:`conv1d_taps`, which ``vmap`` over batched weights
        turns into ``bmm``). Frames have no padding: their all-ones mask is skipped (multiplying
        by 1 and subtracting 0 are exact, so the result is bitwise the same, with less work).
        """
        if self.is_bytes:
            ids = x.long()
            mask = (ids != 0).to(self.proj.weight.dtype)  # [B, L]
            h = self.embedding(ids) * mask.unsqueeze(-1)  # [B, L, E]
        else:
            h = x.to(self.proj.weight.dtype).transpose(1, 2)  # [B, T, C]
            mask = None  # frames: every position is valid
        conv_fn = conv1d_taps if self.conv == "taps" else conv1d_native  # looked up per call (patchable)
        for conv, norm in zip(self.convs, self.norms):
            h = self.act(norm(conv_fn(h, conv.weight, conv.bias, self.stride)))  # [B, ceil(T/s), ch]
            if mask is not None:
                mask = mask[:, :: self.stride]
                h = h * mask.unsqueeze(-1)  # padding positions back to zero
        if mask is None:  # masked_mean_max with an all-ones mask, without the no-op arithmetic
            return self.proj(torch.cat([h.sum(dim=1) / float(h.shape[1]), h.amax(dim=1)], dim=-1))
        return self.proj(masked_mean_max(h.transpose(1, 2), mask))  # [B, out_dim]


def conv1d_taps(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """Channels-last 1-D convolution with ``padding = k // 2``, as a sum of ``k`` matmuls.

    Args:
        h: ``[B, T, C_in]``.
        weight: ``[C_out, C_in, k]`` (``nn.Conv1d`` layout), ``k`` odd.
        bias: ``[C_out]`` or ``None``.
    Returns:
        ``[B, ceil(T / stride), C_out]``; equals ``F.conv1d(h^T, weight, bias, stride, k // 2)^T``.
    """
    k = weight.shape[-1]
    pad = k // 2
    length = h.shape[1]
    out_len = (length - 1) // stride + 1
    hp = nn.functional.pad(h, (0, 0, pad, pad))  # [B, T + 2 pad, C_in]
    span = stride * (out_len - 1) + 1
    out = hp[:, 0:span:stride] @ weight[:, :, 0].transpose(0, 1)
    for j in range(1, k):
        out = out + hp[:, j : j + span : stride] @ weight[:, :, j].transpose(0, 1)
    return out if bias is None else out + bias


def conv1d_native(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """:func:`conv1d_taps`'s contract through ``F.conv1d`` (one library call; under ``vmap`` with
    per-task weights one grouped convolution across the tasks). Rounds differently from the taps."""
    x = h.transpose(1, 2)  # [B, C_in, T]
    return nn.functional.conv1d(x, weight, bias, stride=stride, padding=weight.shape[-1] // 2).transpose(1, 2)


#: ``cnn1d``'s ``conv`` choices (:func:`conv1d_taps`, :func:`conv1d_native`)
CONV_IMPLS = ("taps", "native")


@register_encoder("lstm")
class LSTMEncoder(nn.Module):
    """Single-layer LSTM with explicit matmuls and a Python loop over time (``nn.LSTM``'s fused
    kernel has no vmap rule for batched weights). Slow for long sequences: use ``stride`` to
    subsample frames (e.g. 3 for 300 log-mel frames) or prefer ``cnn1d``.

    Args:
        input_shape: ``(L,)`` byte ids or ``(C, T)`` frames.
        out_dim: output width.
        hidden: LSTM state width (default 128).
        embed_dim: byte-embedding width (byte ids only; default 32).
        vocab_size: number of token ids incl. padding 0 (default 257).
        stride: keep every ``stride``-th time step (default 1).
        pooling: ``mean`` (masked mean of hidden states) or ``last`` (last valid state).

    Shapes: ``long [B, L]`` or ``float [B, C, T]`` -> ``[B, out_dim]``. Padding steps leave
    the state unchanged and are excluded from the mean.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_dim: int,
        *,
        hidden: int = 128,
        embed_dim: int = 32,
        vocab_size: int = BYTE_VOCAB,
        stride: int = 1,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.is_bytes = _check_shape("lstm", input_shape)
        if pooling not in ("mean", "last"):
            raise ValueError(f"lstm: pooling must be 'mean' or 'last', got {pooling!r}")
        if stride < 1 or hidden < 1:
            raise ValueError(f"lstm: stride and hidden must be >= 1, got {stride}, {hidden}")
        self.input_shape = tuple(input_shape)
        self.out_dim = out_dim
        self.hidden = hidden
        self.stride = stride
        self.pooling = pooling
        if self.is_bytes:
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            in_dim = embed_dim
        else:
            self.embedding = None
            in_dim = input_shape[0]
        self.input_proj = nn.Linear(in_dim, 4 * hidden)  # gates i, f, g, o
        self.recurrent = nn.Linear(hidden, 4 * hidden, bias=False)
        with torch.no_grad():
            self.input_proj.bias.zero_()
            self.input_proj.bias[hidden : 2 * hidden].fill_(1.0)  # forget-gate bias 1
        self.proj = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``long [B, L]`` or ``float [B, C, T]`` -> ``[B, out_dim]``."""
        dtype = self.proj.weight.dtype
        if self.is_bytes:
            ids = x.long()[:, :: self.stride]
            mask = (ids != 0).to(dtype)  # [B, T]
            seq = self.embedding(ids)  # [B, T, E]
        else:
            seq = x.to(dtype)[:, :, :: self.stride].transpose(1, 2).contiguous()  # [B, T, C]
            mask = torch.ones_like(seq[:, :, 0])  # [B, T]
        gates_in = self.input_proj(seq)  # [B, T, 4H]
        H = self.hidden
        h = gates_in.new_zeros(gates_in.shape[0], H)
        c = h
        total = h
        steps = gates_in.unbind(1)  # one stack in backward (indexing per step costs O(T^2))
        masks = mask.unsqueeze(-1).unbind(1)  # T x [B, 1]
        for x_t, m in zip(steps, masks):
            g = x_t + self.recurrent(h)  # [B, 4H]
            i = torch.sigmoid(g[:, :H])
            f = torch.sigmoid(g[:, H : 2 * H])
            cand = torch.tanh(g[:, 2 * H : 3 * H])
            o = torch.sigmoid(g[:, 3 * H :])
            c_new = f * c + i * cand
            h_new = o * torch.tanh(c_new)
            c = m * c_new + (1.0 - m) * c
            h = m * h_new + (1.0 - m) * h
            total = total + m * h_new
        if self.pooling == "mean":
            pooled = total / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        else:
            pooled = h
        return self.proj(pooled)  # [B, out_dim]
