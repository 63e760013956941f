"""C-MCR objective (Wang et al., Connecting Multi-modal Contrastive Representations, eqs. 2-10),
adapted to two encoder spaces linked by paired data.

Randomness and vmap: with ``noise_std > 0`` the semantic-completion noise is drawn with
``torch.randn`` (from ``generator`` when given, else the global generator). ``torch.func.vmap``
refuses random operations by default; inside ``vmap`` either pass ``noise_std=0`` or call
``vmap(..., randomness="different")`` (each mapped task gets its own noise; a ``generator`` works
there too). The registered module owns a seeded generator (hyper-parameter ``seed``) so that its
noise never touches the global RNG.

Memory (hyper-parameter ``memory``). In C-MCR (sec. 3.2, "Inter-modality Semantic Consistency"
and sec. 4.1 "Audio/Image Memory") the memory is *not* a running queue: it is a fixed set of
unimodal embeddings produced once by the frozen pretrained encoders (all 1.3M ImageNet training
images through CLIP, all 1.8M AudioSet clips through CLAP), unpaired and unlabelled, from which
eq. 2 softly retrieves. ``memory=K > 0`` reproduces that within a meta-learning run: croma's
alignment tasks (:class:`croma.meta.tasks.AlignFamily`) draw, once and seeded when the run is
built, K source and K target items from the benchmark's meta-train alignment rows (the rows the
alignment tasks already use; no labels are read) and pass them, run through the current encoders,
as ``memory_a`` / ``memory_b``. With ``--backbone MOD=NAME`` the bank's inputs are exactly the
frozen pretrained embeddings C-MCR's memory holds. Because this objective's adaptation aggregates
in the encoders' output space (where ``z_a``, ``z_b`` live), the bank is embedded by the encoder
of the current inner step; no gradient flows into it, and nothing is mutated between steps (so
``vmap`` / ``grad`` see a constant bank: a FIFO queue updated per step would not be vmap-safe,
and the paper has none). ``memory=0`` keeps the earlier behaviour: the current (detached,
normalised) batch is the memory.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Mapping

import torch

from croma.losses.contrastive import (
    _TEMPERATURE,
    Temperature,
    _check_embeddings,
    _check_pair,
    _check_positive,
    _clip_normalized,
    _normalize,
)
from croma.losses.registry import HyperRange, LossModule, register_loss

__all__ = ["cmcr_loss"]


def _check_memory(name: str, memory: Any, ref: torch.Tensor) -> None:
    _check_embeddings("cmcr_loss", name, memory)
    if memory.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"cmcr_loss: {name} has dimension {memory.shape[-1]} but the embeddings have {ref.shape[-1]} "
            f"({name} must be [K, D])"
        )


def _semantic_completion(
    x: torch.Tensor, noise_std: float, generator: torch.Generator | None
) -> torch.Tensor:
    """``normalise(x + ε)``, ``ε ~ N(0, noise_std²)``; identity when ``noise_std == 0``. ``[N, D]``."""
    if noise_std == 0:
        return x
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _normalize(x + noise_std * eps)


def _aggregate(x: torch.Tensor, memory: torch.Tensor, tau: Temperature) -> torch.Tensor:
    """Memory aggregation (eq. 2): ``Σ_k softmax_k(<x_i, m_k>/τ) m_k``; ``[N, D], [K, D] -> [N, D]``."""
    attn = torch.softmax(x @ memory.transpose(-1, -2) / tau, dim=-1)  # [N, K]
    return attn @ memory


def cmcr_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    memory_a: torch.Tensor | None = None,
    memory_b: torch.Tensor | None = None,
    noise_std: float = 0.0632,
    temperature: Temperature = 0.01,
    memory_temperature: Temperature = 0.01,
    intra_weight: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """C-MCR loss for paired embeddings of two encoder spaces.

    1. Semantic completion: ``ã = normalise(â + ε)``, ``b̃`` likewise, ``ε ~ N(0, noise_std²)``.
    2. Memory aggregation (eq. 2): ``p_i = Σ_k softmax_k(<ã_i, m̂ᵃ_k>/τ_mem) m̂ᵃ_k`` and
       ``q_i`` likewise from ``b̃`` and ``m̂ᵇ``; memories default to the detached normalised
       batch (``â``, ``b̂``, without noise). No gradient flows into the memories.
    3. ``L = clip(ã, b̃; τ) + clip(p, q; τ) + intra_weight · ½ · mean_i(‖ã_i − p_i‖₂ + ‖b̃_i − q_i‖₂)``.

    Args:
        z_a, z_b: paired embeddings ``[N, D]``.
        memory_a, memory_b: optional memories ``[K, D]`` of each space (normalised inside).
        noise_std: std of the completion noise (0 disables it; needed inside plain ``vmap``).
        temperature: τ of both CLIP terms.
        memory_temperature: τ_mem of the aggregation.
        intra_weight: weight of the intra-space term.
        generator: ``torch.Generator`` on the inputs' device for reproducible noise.

    Returns:
        scalar tensor (device/dtype of the inputs).

    Raises:
        ValueError: shape/dtype mismatch naming the argument; non-positive temperatures;
            negative noise_std; a generator on another device.
    """
    _check_pair("cmcr_loss", "z_a", z_a, "z_b", z_b)
    _check_positive("cmcr_loss", "temperature", temperature)
    _check_positive("cmcr_loss", "memory_temperature", memory_temperature)
    _check_noise("cmcr_loss", noise_std)
    if generator is not None and noise_std != 0 and generator.device.type != z_a.device.type:
        raise ValueError(
            f"cmcr_loss: generator is on {generator.device} but the embeddings are on {z_a.device}"
        )
    if memory_a is not None:
        _check_memory("memory_a", memory_a, z_a)
    if memory_b is not None:
        _check_memory("memory_b", memory_b, z_b)
    a, b = _normalize(z_a), _normalize(z_b)  # [N, D]
    mem_a = (a if memory_a is None else _normalize(memory_a.to(a.dtype))).detach()  # [K, D]
    mem_b = (b if memory_b is None else _normalize(memory_b.to(b.dtype))).detach()  # [K, D]
    a_t = _semantic_completion(a, noise_std, generator)  # [N, D]
    b_t = _semantic_completion(b, noise_std, generator)
    p = _aggregate(a_t, mem_a, memory_temperature)  # [N, D]
    q = _aggregate(b_t, mem_b, memory_temperature)
    inter = _clip_normalized(a_t, b_t, temperature) + _clip_normalized(_normalize(p), _normalize(q), temperature)
    intra = 0.5 * (torch.linalg.vector_norm(a_t - p, dim=-1) + torch.linalg.vector_norm(b_t - q, dim=-1)).mean()
    return inter + intra_weight * intra


def _check_noise(fn: str, noise_std: Any) -> None:
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real):
        raise ValueError(f"{fn}: noise_std must be a number >= 0 (got {noise_std!r})")
    if not noise_std >= 0:
        raise ValueError(f"{fn}: noise_std must be >= 0 (got {noise_std!r})")


@register_loss(
    "cmcr",
    paper="Wang et al., C-MCR (Connecting Multi-modal Contrastive Repr.), eqs. 2-10, adapted",
    hyper={
        "noise_std": 0.0632,
        "temperature": 0.01,
        "memory_temperature": 0.01,
        "intra_weight": 0.1,
        "seed": 0,
        "memory": 0,
    },
    ranges={
        "noise_std": HyperRange(0.0, 10.0, usual=(0.0, 0.5)),
        "temperature": _TEMPERATURE,
        "memory_temperature": _TEMPERATURE,
        "intra_weight": HyperRange(0.0, 1e4, usual=(0.0, 10.0)),
        "seed": HyperRange(0, 2**62, integer=True),
        "memory": HyperRange(0, 10**6, integer=True),  # K items of the bank (K x embed_dim floats per modality)
    },
    formula="ã = norm(â+ε), p = softmax(ã m̂ᵃᵀ/τ_mem) m̂ᵃ (b̃, q alike; memory m = the batch, or with memory=K a "
    "fixed seeded bank of K meta-train items);  clip(ã,b̃) + clip(p,q) + λ·½·mean(‖ã−p‖ + ‖b̃−q‖)",
)
class CMCRLoss(LossModule):
    """``cmcr_loss(z_a=z_source, z_b=z_target, ...)``.

    Context: ``memory_a [K, D]``, ``memory_b [K, D]``, ``generator``. Without a generator in the
    context the module draws noise from its own generator seeded with ``seed`` (one per device,
    created on first use), never from the global RNG. Inside ``torch.func.vmap`` use
    ``noise_std=0`` or ``vmap(..., randomness="different")``.

    Hyper-parameter ``memory`` (int >= 0): the size K of the memory bank the alignment tasks
    build and pass as ``memory_a`` / ``memory_b`` (see the module docstring: C-MCR's fixed memory
    of frozen-encoder embeddings); 0 (default) = the current batch is the memory. Memories given in
    the context are always used. ``memory > 0`` without them (a caller that builds no bank, e.g.
    the ordinary-training baselines) falls back to the batch with a one-time warning.
    """

    context_keys = ("memory_a", "memory_b", "generator")

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self._generators: dict[str, torch.Generator] = {}
        self._warned = False

    @property
    def memory_size(self) -> int:
        """K of ``memory=K``: how many items the caller's memory bank should hold (0: the batch)."""
        return int(self.hparams["memory"])

    def check_hyper(self, hp: Mapping[str, Any]) -> None:
        _check_positive("cmcr", "temperature", hp["temperature"])
        _check_positive("cmcr", "memory_temperature", hp["memory_temperature"])
        _check_noise("cmcr", hp["noise_std"])
        if isinstance(hp["seed"], bool) or not isinstance(hp["seed"], int):
            raise ValueError(f"cmcr: seed must be an integer (got {hp['seed']!r})")
        mem = hp["memory"]
        if isinstance(mem, bool) or not isinstance(mem, numbers.Integral) or mem < 0:
            raise ValueError(f"cmcr: memory must be an integer >= 0 (the memory bank size K; 0 = the batch) "
                             f"(got {mem!r})")

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(int(self.hparams["seed"]))
        return self._generators[key]

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor, **context: Any) -> torch.Tensor:
        self._check_context(context)
        hp = {k: v for k, v in self.hparams.items() if k not in ("seed", "memory")}
        if self.memory_size > 0 and context.get("memory_a") is None and not self._warned:
            self._warned = True
            warnings.warn(f"cmcr memory={self.memory_size}: the caller gave no memory_a / memory_b; "
                          "using the current batch as the memory", RuntimeWarning, stacklevel=2)
        generator = context.get("generator")
        if generator is None and hp["noise_std"] != 0 and isinstance(z_source, torch.Tensor):
            generator = self._generator(z_source.device)
        return cmcr_loss(
            z_source, z_target, memory_a=context.get("memory_a"), memory_b=context.get("memory_b"),
            generator=generator, **hp,
        )
