"""The one-line warning ``croma train`` prints before a run whose features make it slow on a CPU."""

from __future__ import annotations

__all__ = ["slow_run_warning", "SEQUENCE_S_PER_ITERATION", "SLOW_WARN_S"]

# the modalities of the built-in data sets (a manifest's come from --source / --target)
_MODALITIES = {"udhr-speech": ("text", "audio"), "cifar-esc50": ("image", "audio"), "yummly": ("text", "image"),
               "wilderness": ("text", "audio")}
# measured: croma train udhr-speech, sequence features, cnn1d encoders, default sizes (meta-batch 8, 5 inner
# steps), eager, 2-core CPU: 0.69-0.72 s per iteration (docs/speed.md, "Speed")
SEQUENCE_S_PER_ITERATION = 0.7
SLOW_WARN_S = 300.0


def slow_run_warning(cfg) -> str | None:
    """One line for a run whose features make it slow: sequence features (byte ids, log-mel frames)
    through cnn1d / lstm encoders on the CPU, estimated over :data:`SLOW_WARN_S` from the measured
    :data:`SEQUENCE_S_PER_ITERATION` (scaled by meta-batch and inner steps); None otherwise."""
    from croma.config import TrainConfig
    from croma.factory import resolve_device

    d = cfg.data
    if d.features != "sequence" or cfg.compile_inner or resolve_device(cfg.device).type != "cpu":
        return None
    mods = _MODALITIES.get(d.benchmark) or tuple(m for m in (d.source, d.target) if m)
    chosen = dict(cfg.model.get("encoders") or {})
    backbones = dict(d.backbones or {})
    slow = [m for m in mods if m in ("text", "audio") and m not in backbones
            and chosen.get(m, "bert" if m == "text" and cfg.model.get("text_model") else "cnn1d") in ("cnn1d", "lstm")]
    if not slow:
        return None
    base = TrainConfig()
    per_it = SEQUENCE_S_PER_ITERATION * (cfg.meta_batch / base.meta_batch) * (cfg.inner_steps / base.inner_steps)
    est = per_it * max(0, cfg.iterations)
    if est < SLOW_WARN_S:
        return None
    return (f"warning: sequence features through {'/'.join(sorted({chosen.get(m, 'cnn1d') for m in slow}))} encoders on "
            f"the CPU: ~{est / 60:.0f} min for {cfg.iterations} iterations before meta-val (measured ~0.7 s per "
            f"iteration at meta-batch 8 on a 2-core CPU, docs/speed.md); --features compact trains MLP encoders on "
            "vectors in a fraction of that, --compile-inner is ~2.5x faster (--quiet hides this line)")
