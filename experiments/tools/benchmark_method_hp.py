"""``croma benchmark manifest`` with per-method hyper-parameters (``BenchmarkConfig.method_hp``),
which the CLI does not expose: for the final meta-test run of settings chosen on meta-val by
``tune_manifest.py``.

    python experiments/tools/benchmark_method_hp.py --method-hp '{"croma": {"loss": "cmcr", "loss_hp": {"memory": 256}, "inner_lr": 0.001}}' \\
        -- manifest --manifest /tmp/emoji/manifest.jsonl --source image --target text \\
        --backbone image=efficientnet-lite0 --preset quick --shots 1 5 --out /tmp/emoji_final

Everything after ``--`` is ``croma benchmark``'s own command line; ``--method-hp`` is merged over
the preset's ``method_hp`` (``croma.benchmark._method_hp``) for the named methods only.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--method-hp" not in argv or "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    own, rest = argv[:split], argv[split + 1:]
    method_hp = json.loads(own[own.index("--method-hp") + 1])

    import croma.benchmark as benchmark

    original = benchmark._method_hp

    def with_overrides(cfg, preset, name):
        hp = original(cfg, preset, name)
        hp.update(method_hp.get(name, {}))
        return hp

    benchmark._method_hp = with_overrides
    from croma.cli import main as croma_main

    return croma_main(["benchmark", *rest])


if __name__ == "__main__":
    raise SystemExit(main())
