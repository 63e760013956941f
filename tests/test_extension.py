"""Extending croma: one new objective, encoder, data set and method, each registered through its
registry's public decorator, then run through the real CLI (``croma train`` / ``croma benchmark``).

Also the :class:`Registry` helper itself: duplicates, unknown names, order, info, decorator use.
"""

import json

import pytest
import torch
from torch import nn

from croma.cli import main
from croma.registry import Registry
from episodes.registry import DuplicateNameError, UnknownNameError

torch.set_num_threads(1)

TOY = {"loss": "toy-mse", "encoder": "toy-linear", "dataset": "toy-vectors", "method": "toy-method"}


# -- the Registry helper -------------------------------------------------------------------------
def test_registry_register_get_names_info_and_errors():
    reg = Registry("widget")

    @reg.register("b", info={"doc": "second letter"})
    def b():
        return "b"

    assert reg.register("a", 1) == 1  # call form returns the object
    assert b() == "b" and reg.get("b") is b and reg["a"] == 1  # decorator leaves the function as it was
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"]  # registration order
    assert len(reg) == 2 and "a" in reg and "c" not in reg and 3 not in reg
    assert reg.info("b") == {"doc": "second letter"} and reg.info("a") is None
    assert dict(reg.items()) == {"b": b, "a": 1}

    with pytest.raises(DuplicateNameError, match="widget 'a' is already registered"):
        reg.register("a", 2)
    assert reg.get("a") == 1
    reg.register("a", 2, overwrite=True)
    assert reg.get("a") == 2

    with pytest.raises(UnknownNameError) as exc:
        reg.get("nope")
    assert str(exc.value) == "unknown widget 'nope'; available: b, a"
    # a ValueError (the CLI prints it as one line) and a KeyError (dict-like access)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, KeyError)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", 3)

    assert reg.unregister("a") == 2 and reg.names() == ["b"]
    with pytest.raises(UnknownNameError):
        reg.info("a")


# -- toy extensions, registered through the public functions -------------------------------------
@pytest.fixture
def toys():
    """Register a toy objective, encoder, data set and method; remove them afterwards."""
    from croma.baselines import METHODS, register_method
    from croma.baselines.common import MethodContext, finish, fresh_model, target_pool_counts
    from croma.encoders import ENCODERS, register_encoder
    from croma.losses.registry import LOSSES, LossModule, register_loss
    from episodes.datasets import DATASETS, register_dataset
    from episodes.datasets.synthetic import make_synthetic_benchmark

    calls = {k: 0 for k in TOY}

    @register_loss(TOY["loss"], paper="none (a test)", formula="scale * mean ||z_u - z_v||^2", hyper={"scale": 1.0})
    class ToyMSE(LossModule):
        def forward(self, z_source, z_target, **context):  # [N, D], [N, D] -> scalar
            self._check_context(context)
            calls["loss"] += 1
            return self.hparams["scale"] * (z_source - z_target).pow(2).sum(-1).mean()

    @register_encoder(TOY["encoder"])
    class ToyLinear(nn.Module):
        def __init__(self, input_shape, out_dim, *, hidden: int = 0):
            super().__init__()
            calls["encoder"] += 1
            self.out_dim = out_dim
            self.proj = nn.Linear(input_shape[0], out_dim)

        def forward(self, x):  # [B, F] -> [B, out_dim]
            return self.proj(x)

    @register_dataset(TOY["dataset"], prepared=True)
    def load_toy(*, seed: int = 0):
        calls["dataset"] += 1
        bench = make_synthetic_benchmark(num_classes=15, per_class=8, source_dim=6, target_dim=5, latent_dim=3,
                                         seed=seed)
        bench.name = TOY["dataset"]
        return bench

    @register_method(TOY["method"], family="toy", description="a test: the initial model, no training")
    def toy_method(ctx: MethodContext):
        calls["method"] += 1
        model = fresh_model(ctx)
        return finish(ctx, model, None, train_seconds=0.0, outer_steps=0, optimizer_steps=0,
                      counts=target_pool_counts(ctx.bench))

    yield calls
    LOSSES.unregister(TOY["loss"])
    ENCODERS.unregister(TOY["encoder"])
    DATASETS.unregister(TOY["dataset"])
    METHODS.unregister(TOY["method"])


def test_toy_extensions_appear_in_every_listing(toys, capsys):
    from croma.baselines import get_method, list_methods
    from croma.cli import build_parser
    from croma.encoders import list_encoders
    from croma.losses import get_loss, list_losses
    from episodes.datasets import list_datasets

    assert TOY["loss"] in list_losses() and TOY["encoder"] in list_encoders()
    assert TOY["dataset"] in list_datasets() and TOY["dataset"] not in list_datasets(items_only=True)
    assert list_methods()[-1] == TOY["method"] and get_method(TOY["method"]).family == "toy"
    assert float(get_loss(TOY["loss"], scale=2.0)(torch.ones(2, 3), torch.zeros(2, 3))) == 6.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--help"])
    text = capsys.readouterr().out
    assert TOY["dataset"] in text and TOY["method"] in text and TOY["loss"] in text and TOY["encoder"] in text
    assert main(["losses"]) == 0 and TOY["loss"] in capsys.readouterr().out


def test_toy_extensions_run_through_the_cli(toys, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", TOY["dataset"], "--loss", TOY["loss"], "--encoder", f"text={TOY['encoder']}",
               "--encoder", f"audio={TOY['encoder']}", "--iterations", "2", "--checkpoint-dir", str(run),
               "--quiet", "--device", "cpu", "--ways", "3", "--shots", "1", "--queries", "1", "--meta-batch", "2",
               "--inner-steps", "1", "--embed-dim", "4", "--hidden", "8", "--align-batch", "4",
               "--eval-every", "0", "--eval-tasks", "1", "--finetune-steps", "1"])
    assert rc == 0, capsys.readouterr().err
    assert (run / "last.pt").is_file()
    assert toys["dataset"] >= 1 and toys["encoder"] >= 2 and toys["loss"] >= 1

    out = tmp_path / "bench"
    before = dict(toys)
    rc = main(["benchmark", TOY["dataset"], "--methods", TOY["method"], "--loss", TOY["loss"], "--shots", "1",
               "--repeats", "1", "--eval-tasks", "1", "--ways", "3", "--budget-steps", "1", "--device", "cpu",
               "--encoder", f"text={TOY['encoder']}", "--encoder", f"audio={TOY['encoder']}",
               "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    assert data["benchmark"] == TOY["dataset"] and data["loss"] == TOY["loss"]
    assert {r["method"] for r in data["rows"]} == {TOY["method"]}
    assert toys["method"] == before["method"] + 1 and toys["dataset"] > before["dataset"]
    assert toys["encoder"] > before["encoder"]


def test_unknown_names_are_one_line_cli_errors(capsys):
    assert main(["train", "no-such-data", "--checkpoint-dir", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: BENCH must be one of") and "synthetic" in err and len(err.splitlines()) == 1
