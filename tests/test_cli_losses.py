"""`croma losses` and `croma bench losses` (CLI) plus the benchmark library function."""

import pytest
import torch

from croma.cli import main
from croma.perf.losses import LossBenchConfig, LossBenchRow, format_loss_bench, run_loss_bench

NAMES = ["clip", "cmcr", "cwcl", "nce", "pcmc", "pcmr"]


def test_croma_losses_lists_six_objectives(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split(" | ")[0].strip() == "name" and "paper" in out[0] and "hyper-parameters" in out[0]
    rows = [line.split(" | ") for line in out[2:]]
    assert [r[0].strip() for r in rows] == NAMES
    by_name = {r[0].strip(): r for r in rows}
    assert by_name["clip"][2].strip() == "temperature=0.07"
    assert by_name["pcmr"][2].strip() == "rho=1.0, threshold=0.99"
    assert by_name["nce"][2].strip() == "-"
    assert "CWCL" in by_name["cwcl"][1]


def test_croma_losses_formulas(capsys):
    assert main(["losses", "--formulas"]) == 0
    out = capsys.readouterr().out
    assert "cwcl: " in out and "log softmax" in out


def test_bench_losses_runs_small(capsys):
    assert main(["bench", "losses", "--sizes", "8", "--repeats", "1", "--dim", "16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("forward+backward, median of 1 (ms); D=16")
    assert out[1].split() == ["loss", "N=8"]
    table = [line.split() for line in out[3:]]
    assert [r[0] for r in table] == NAMES
    assert all(float(r[1]) > 0 for r in table)


def test_bench_losses_default_dim_subset(capsys):
    assert main(["bench", "losses", "--sizes", "8", "--repeats", "1", "--loss", "clip", "nce"]) == 0
    out = capsys.readouterr().out
    assert "D=256" in out and "threads=1" in out


def test_bench_unknown_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "losses", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sizes", "1"], "error: --sizes must all be >= 2 (got 1)"),
        (["--repeats", "0"], "error: --repeats must be >= 1 (got 0)"),
        (["--dim", "0"], "error: --dim must be >= 1 (got 0)"),
        (["--loss", "nope", "--sizes", "8"], "error: unknown loss 'nope'"),
    ],
)
def test_bench_bad_values_one_line_error(argv, message, capsys):
    assert main(["bench", "losses", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_bench_cuda_missing_is_user_error(capsys):
    assert main(["bench", "losses", "--sizes", "8", "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device" in capsys.readouterr().err


def test_run_loss_bench_rows_and_threads_restored():
    before = torch.get_num_threads()
    rows = run_loss_bench(LossBenchConfig(sizes=(4, 6), dim=8, repeats=2, device="cpu", losses=("cwcl", "pcmr")))
    assert torch.get_num_threads() == before
    assert [(r.loss, r.n) for r in rows] == [("cwcl", 4), ("cwcl", 6), ("pcmr", 4), ("pcmr", 6)]
    assert all(r.dim == 8 and r.repeats == 2 and r.device == "cpu" and 0 < r.min_ms <= r.median_ms for r in rows)


def test_format_loss_bench_table():
    rows = [LossBenchRow("clip", 64, 256, "cpu", 1.5, 1.0, 5), LossBenchRow("clip", 256, 256, "cpu", 12.25, 11.0, 5),
            LossBenchRow("nce", 64, 256, "cpu", 0.5, 0.4, 5)]
    lines = format_loss_bench(rows).splitlines()
    assert lines[0].split() == ["loss", "N=64", "N=256"]
    assert lines[2].split() == ["clip", "1.500", "12.250"]
    assert lines[3].split() == ["nce", "0.500", "-"]
