"""`croma losses`: the registered alignment objectives (name | paper | default hyper-parameters)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "losses",
        help="list the alignment objectives",
        description="List the registered alignment objectives with their paper, default "
        "hyper-parameters (pass them to training as --loss-hp KEY=VALUE) and the ranges each accepts.",
    )
    p.add_argument("--formulas", action="store_true", help="also print each objective's formula")
    p.set_defaults(func=run)


def _fmt_hyper(hyper) -> str:
    return ", ".join(f"{k}={v}" for k, v in hyper.items()) or "-"


def run(args) -> int:
    from croma.losses import loss_infos

    infos = loss_infos()
    head = ["name", "paper", "hyper-parameters (defaults)", "accepted ranges"]
    body = [[i.name, i.paper, _fmt_hyper(i.hyper), ", ".join(f"{k} {r.text()}" for k, r in i.ranges.items()) or "-"]
            for i in infos]
    widths = [max(len(r[c]) for r in [head] + body) for c in range(len(head))]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    print(line(head))
    print("-|-".join("-" * w for w in widths))
    for row in body:
        print(line(row))
    if getattr(args, "formulas", False):
        print()
        for i in infos:
            print(f"{i.name}: {i.formula}")
    return 0
