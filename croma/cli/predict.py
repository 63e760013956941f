"""`croma predict RUN --support S.jsonl --query Q.jsonl`: adapt a trained run to new classes, predict.

Rows are manifest lines of the run's target modality (``{"id", "label", "<modality>": value}``;
paths relative to the file's folder). Support rows carry labels; query rows may (then the accuracy
is printed). One output row per query: ``{"id", "predicted", "scores": {class: probability}}``
(plus ``"label"`` when the query had one). No training data, feature cache or front-end refit is
needed: the run folder holds the fitted front-end (:mod:`croma.runmodel`).
"""

from __future__ import annotations

import contextlib
import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="fine-tune a trained run on your labelled examples and predict new items",
        description="Load RUN (a 'croma train' folder) without its training data, fine-tune it on the labelled "
        "support rows as meta-val chose for that many shots, and predict the query rows.",
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder of 'croma train' (or a .pt checkpoint)")
    p.add_argument("--support", required=True, metavar="FILE.jsonl",
                   help="labelled examples of your classes (manifest rows of the run's target modality)")
    p.add_argument("--query", required=True, metavar="FILE.jsonl",
                   help="items to predict (same format; labels optional: with them the accuracy is printed)")
    p.add_argument("--out", default=None, metavar="FILE.jsonl",
                   help="write one JSON row per query item (id, predicted, scores) to this file (written atomically)")
    p.add_argument("--json", action="store_true", help="print the predictions and the summary as one JSON document")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="default cpu")
    p.add_argument("--head-init", choices=("meta", "zero", "prototype"), default=None,
                   help="classifier head start (default: meta-val's choice for this k)")
    p.add_argument("--finetune", choices=("all", "head"), default=None, help="what to fine-tune (default: meta-val's)")
    p.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps (default: meta-val's)")
    p.add_argument("--finetune-lr", type=float, default=None, help="fine-tuning learning rate (default: meta-val's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from croma.errors import CromaError
    from croma.runmodel import load_model
    from episodes.datasets.rows import load_rows
    from episodes.errors import DataError

    model = load_model(args.run_dir, which=args.checkpoint, device=args.device)
    target = model.target
    s_where: list[str] = []
    q_where: list[str] = []
    try:
        s_ids, s_vals, s_labs = load_rows(args.support, target, labels="required", flag="--support", wheres=s_where)
        q_ids, q_vals, q_labs = load_rows(args.query, target, labels="optional", flag="--query", wheres=q_where)
    except DataError as exc:
        raise CromaError(str(exc)) from None
    with _naming_the_row(s_vals, s_ids, s_where, "--support"):
        adapted = model.adapt(s_vals, s_labs, ids=s_ids, steps=args.finetune_steps, lr=args.finetune_lr,
                              finetune=args.finetune, head_init=args.head_init)
    with _naming_the_row(q_vals, q_ids, q_where, "--query"):
        pred = adapted.predict(q_vals, ids=q_ids)
    rows = []
    for i, qid in enumerate(q_ids):
        row = {"id": qid, "predicted": pred.labels[i],
               "scores": {str(c): round(float(pred.scores[i, j]), 6) for j, c in enumerate(pred.classes)}}
        if q_labs is not None:
            row["label"] = q_labs[i]
        rows.append(row)
    st = adapted.setting
    shots = (f"{st['shots']}-shot support" if "shots_max" not in st else
             f"{st['shots']}-{st['shots_max']} examples per class (meta-val's {st['shots']}-shot setting)")
    setting = (f"{st['ways']} classes, {shots}: head init {st['head_init']}, fine-tune "
               f"{st['finetune']} for {st['finetune_steps']} steps ({st['finetune_optimizer']}, lr {st['finetune_lr']:g})")
    summary: dict = {"run": str(model.path), "queries": len(rows), "classes": [str(c) for c in pred.classes],
                     "setting": {k: v for k, v in st.items()}}
    lines = [f"adapted {model.path}: {setting}" + (f"; {st['note']}" if st.get("note") else "")]
    if q_labs is not None:
        correct = sum(r["predicted"] == r["label"] for r in rows)
        unknown = sum(lab not in set(map(str, pred.classes)) for lab in q_labs)
        from croma.stats import wilson_interval

        low, high = wilson_interval(correct, len(rows))
        summary.update(accuracy=100.0 * correct / len(rows), correct=correct, accuracy_ci95_low=low,
                       accuracy_ci95_high=high)
        lines.append(f"accuracy {summary['accuracy']:.2f}% ({correct} of {len(rows)} queries; 95% interval "
                     f"{low:.1f}-{high:.1f} over the queries, for this support set)"
                     + (f"; {unknown} query labels are not support classes (counted as errors)" if unknown else ""))
    if args.out:
        from croma.cli.embed import write_atomically

        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        write_atomically(args.out, text.encode("utf-8"), "--out")
        lines.append(f"wrote {len(rows)} predictions to {args.out}")
    if args.json:
        print(json.dumps({**summary, "predictions": rows}, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        if not args.out:
            for r in rows:
                p = r["scores"][str(r["predicted"])]
                print(f"{r['id']}\t{r['predicted']}\t{p:.4f}" + (f"\t(label {r['label']})" if "label" in r else ""))
        for line in lines:
            print(line)
    sys.stdout.flush()
    return 0


@contextlib.contextmanager
def _naming_the_row(values: list, ids: list, wheres: list, flag: str):
    """An unreadable file found while decoding (``PATH: unreadable ...``) names its item and row, as a
    missing file does when the rows are read."""
    from croma.errors import CromaError

    try:
        yield
    except CromaError as exc:
        msg = str(exc)
        for v, item_id, where in zip(values, ids, wheres):
            if isinstance(v, str) and msg.startswith(v + ":"):
                raise CromaError(f"{msg} (item {item_id!r}, {where}; fix or remove that {flag} row)") from None
        raise
