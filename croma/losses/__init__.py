"""Alignment objectives and their registry.

Plain functions do the math on raw ``[N, D]`` embeddings (normalised inside, vmap/grad-safe):
:func:`nce_loss`, :func:`clip_loss`, :func:`cwcl_loss`, :func:`pcmc_loss`, :func:`pcmr_loss`,
:func:`cmcr_loss`. The registry builds thin modules called uniformly as
``get_loss(name, **hp)(z_source, z_target, **context) -> scalar``.
"""

from croma.losses.registry import (  # noqa: I001 - registry first, families register on import
    LossInfo,
    LossModule,
    get_loss,
    list_losses,
    loss_info,
    loss_infos,
    register_loss,
)
from croma.losses.contrastive import clip_loss, cwcl_loss, nce_loss
from croma.losses.coordination import pcmc_loss, pcmr_loss
from croma.losses.cmcr import cmcr_loss

__all__ = [
    "LossInfo",
    "LossModule",
    "clip_loss",
    "cmcr_loss",
    "cwcl_loss",
    "get_loss",
    "list_losses",
    "loss_info",
    "loss_infos",
    "nce_loss",
    "pcmc_loss",
    "pcmr_loss",
    "register_loss",
]
