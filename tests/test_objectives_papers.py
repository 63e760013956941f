"""Objectives in the settings their papers assume (issue 11 item 5).

* ``cwcl weights=frozen_source``: the intra-modal weights come from the frozen source features
  (CWCL sec. 2.3), not from the encoder being trained; ``weights=encoder`` is the earlier output
  bit for bit; ``auto`` picks ``frozen_source`` exactly when the source has a pretrained backbone.
* ``cmcr memory=K``: a fixed, seeded bank of K meta-train items is the memory (C-MCR's memory of
  frozen-encoder embeddings); ``memory=0`` is the earlier output bit for bit.
"""

import dataclasses
import math

import pytest
import torch
from torch.func import vmap

from croma.config import TrainConfig
from croma.errors import CromaError
from croma.factory import build_model
from croma.losses import cmcr_loss, cwcl_loss, get_loss, loss_info
from croma.meta.functional import FunctionalModel
from croma.meta.tasks import AlignFamily, model_inputs

CLI_TINY = ["--iterations", "2", "--meta-batch", "2", "--ways", "3", "--shots", "2", "--queries", "2",
            "--align-batch", "8", "--eval-every", "0", "--quiet", "--device", "cpu"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _model(bench, seed=0):
    torch.manual_seed(seed)
    model = build_model(TrainConfig(benchmark="synthetic", seed=seed), bench)
    return model.eval()


def _frozen(bench):
    """The synthetic benchmark, labelled as if its source features came from a pretrained backbone."""
    return dataclasses.replace(bench, info={**bench.info, "backbones": {bench.source: "fake-pretrained"}})


class _Spy(torch.nn.Module):
    """Wraps an objective and records the context the family passes."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.context_keys = inner.context_keys
        self.seen = []
        for attr in ("resolve_weights", "memory_size"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))

    def forward(self, zs, zt, **context):
        self.seen.append(dict(context))
        return self.inner(zs, zt, **context)


# ----------------------------------------------------------------------------- cwcl
def _cwcl_by_hand(zu, zv, w, tau):
    """Eqs. 3-4 with explicit loops; ``w`` defines W."""
    n = zu.shape[0]
    u = [zu[i] / zu[i].norm() for i in range(n)]
    v = [zv[i] / zv[i].norm() for i in range(n)]
    q = [w[i] / w[i].norm() for i in range(n)]
    s = [[float(u[i] @ v[j]) / tau for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        lse = math.log(sum(math.exp(s[i][k]) for k in range(n)))
        wts = [float(q[i] @ q[j]) / 2 + 0.5 for j in range(n)]
        total += sum(wts[j] * (s[i][j] - lse) for j in range(n)) / sum(wts)
    ce = 0.0
    for j in range(n):  # CE of S^T: row j = V item j over U items
        lse = math.log(sum(math.exp(s[k][j]) for k in range(n)))
        ce += lse - s[j][j]
    return -total / n + ce / n


def test_cwcl_frozen_source_weights_by_hand():
    zs = torch.randn(3, 4, generator=_gen(1), dtype=torch.float64)
    zt = torch.randn(3, 4, generator=_gen(2), dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # W_01 = .5, W_02 = W_12 ≈ .854
    loss = get_loss("cwcl", weights="frozen_source", temperature=0.5)
    got = loss(zs, zt, weights_from=w)
    assert got.item() == pytest.approx(_cwcl_by_hand(zt, zs, w, 0.5), rel=1e-10)
    # the weights are those of w, not of the source embeddings
    assert got.item() != pytest.approx(_cwcl_by_hand(zt, zs, zs, 0.5), rel=1e-6)


def test_cwcl_encoder_mode_and_auto_equal_todays_output_bitwise():
    zs = torch.randn(6, 5, generator=_gen(3))
    zt = torch.randn(6, 5, generator=_gen(4))
    wf = torch.randn(6, 7, generator=_gen(5))
    today = cwcl_loss(zt, zs, temperature=0.07)
    assert torch.equal(get_loss("cwcl", weights="encoder")(zs, zt), today)
    assert torch.equal(get_loss("cwcl", weights="encoder")(zs, zt, weights_from=wf), today)  # ignored
    assert torch.equal(get_loss("cwcl")(zs, zt), today)
    assert torch.equal(get_loss("cwcl")(zs, zt, weights_from=wf), cwcl_loss(zt, zs, weights_from=wf))


def test_cwcl_hyper_parameter_documented_and_checked():
    assert loss_info("cwcl").hyper["weights"] == "auto"
    with pytest.raises(ValueError, match="cwcl: weights must be one of auto, frozen_source, encoder"):
        get_loss("cwcl", weights="source")
    assert get_loss("cwcl").resolve_weights(True) == "frozen_source"
    assert get_loss("cwcl").resolve_weights(False) == "encoder"
    assert get_loss("cwcl", weights="encoder").resolve_weights(True) == "encoder"
    assert get_loss("cwcl", weights="frozen_source").resolve_weights(False) == "frozen_source"


def test_cwcl_frozen_source_without_weights_warns_and_falls_back():
    zs, zt = torch.randn(4, 3, generator=_gen(6)), torch.randn(4, 3, generator=_gen(7))
    with pytest.warns(RuntimeWarning, match="no weights_from"):
        got = get_loss("cwcl", weights="frozen_source")(zs, zt)
    assert torch.equal(got, cwcl_loss(zt, zs))


def test_align_family_passes_frozen_source_features_independent_of_encoder(bench):
    fb = _frozen(bench)
    model_a, model_b = _model(fb, seed=0), _model(fb, seed=1)
    inputs = model_inputs(model_a, fb, "cpu")
    spy = _Spy(get_loss("cwcl"))  # auto -> frozen_source: the source has a (fake) backbone
    fam = AlignFamily(fb, inputs, loss_module=spy, batch_size=8, seed=0)
    assert fam.objective_settings == {"weights": "frozen_source"}
    batch = {k: v[0] for k, v in fam.sample([0]).items()}
    la = fam.loss(model_a, batch)
    fam.loss(model_b, batch)
    w_a, w_b = spy.seen[0]["weights_from"], spy.seen[1]["weights_from"]
    assert torch.equal(w_a, batch["xs"]) and torch.equal(w_b, batch["xs"])  # the raw frozen features
    zs, zt = model_a.embed(fb.source, batch["xs"]), model_a.embed(fb.target, batch["xt"])
    assert torch.equal(la, cwcl_loss(zt, zs, weights_from=batch["xs"]))
    assert not torch.equal(la, cwcl_loss(zt, zs))


def test_align_family_auto_without_backbone_is_todays_behaviour(bench):
    model = _model(bench)
    spy = _Spy(get_loss("cwcl"))
    fam = AlignFamily(bench, model_inputs(model, bench, "cpu"), loss_module=spy, batch_size=8, seed=0)
    assert fam.objective_settings == {"weights": "encoder"}
    batch = {k: v[0] for k, v in fam.sample([3]).items()}
    got = fam.loss(model, batch)
    assert spy.seen[0] == {}
    zs, zt = model.embed(bench.source, batch["xs"]), model.embed(bench.target, batch["xt"])
    assert torch.equal(got, cwcl_loss(zt, zs))


def test_align_family_weight_vectors_of_sequences_and_images():
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(AlignFamily._vectors(x), x.mean(dim=1))
    img = torch.arange(48.0).reshape(2, 3, 2, 4)
    assert torch.equal(AlignFamily._vectors(img), img.reshape(2, 24))


def test_align_family_frozen_source_rejects_integer_features(bench):
    model = _model(bench)
    inputs = model_inputs(model, bench, "cpu")
    inputs[bench.source] = torch.zeros(inputs[bench.source].shape, dtype=torch.long)
    with pytest.raises(CromaError, match="weights=frozen_source: .* or --loss-hp weights=encoder"):
        AlignFamily(bench, inputs, loss_module=get_loss("cwcl", weights="frozen_source"), batch_size=8, seed=0)


# ----------------------------------------------------------------------------- cmcr
def test_cmcr_memory_zero_equals_todays_output_bitwise():
    za = torch.randn(5, 4, generator=_gen(8))
    zb = torch.randn(5, 4, generator=_gen(9))
    assert torch.equal(get_loss("cmcr", noise_std=0.0)(za, zb), cmcr_loss(za, zb, noise_std=0.0))
    got = get_loss("cmcr")(za, zb, generator=_gen(10))
    assert torch.equal(got, cmcr_loss(za, zb, generator=_gen(10)))
    assert loss_info("cmcr").hyper["memory"] == 0


def test_cmcr_memory_bank_by_hand():
    """N = 2, K = 3, D = 2, no noise: p_i = Σ_k softmax_k(<â_i, m̂_k>/τ_m) m̂_k by hand."""
    za = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    zb = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    ma = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]], dtype=torch.float64)
    mb = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    tau, tau_m, lam = 0.5, 0.25, 0.3

    def unit(v):
        return v / v.norm()

    def agg(x, mem):
        m = [unit(r) for r in mem]
        e = [math.exp(float(x @ r) / tau_m) for r in m]
        return sum(ei / sum(e) * r for ei, r in zip(e, m))

    def clip(a, b):
        s = [[float(unit(a[i]) @ unit(b[j])) / tau for j in range(2)] for i in range(2)]
        row = sum(math.log(sum(math.exp(x) for x in s[i])) - s[i][i] for i in range(2)) / 2
        col = sum(math.log(sum(math.exp(s[k][j]) for k in range(2))) - s[j][j] for j in range(2)) / 2
        return (row + col) / 2

    a = [unit(r) for r in za]
    b = [unit(r) for r in zb]
    p = [agg(x, ma) for x in a]
    q = [agg(x, mb) for x in b]
    intra = 0.5 * sum(float((a[i] - p[i]).norm() + (b[i] - q[i]).norm()) for i in range(2)) / 2
    want = clip(torch.stack(a), torch.stack(b)) + clip(torch.stack(p), torch.stack(q)) + lam * intra
    loss = get_loss("cmcr", memory=3, noise_std=0.0, temperature=tau, memory_temperature=tau_m, intra_weight=lam)
    got = loss(za, zb, memory_a=ma, memory_b=mb)
    assert got.item() == pytest.approx(want, rel=1e-10)
    assert got.item() != pytest.approx(loss(za, zb, memory_a=za, memory_b=zb).item(), rel=1e-6)


def test_cmcr_memory_checked_and_warns_without_bank():
    with pytest.raises(ValueError, match="cmcr: memory must be an integer >= 0"):
        get_loss("cmcr", memory=-1)
    with pytest.raises(ValueError, match="cmcr: memory must be an integer >= 0"):
        get_loss("cmcr", memory=2.5)
    assert get_loss("cmcr", memory=16).memory_size == 16
    za, zb = torch.randn(4, 3, generator=_gen(11)), torch.randn(4, 3, generator=_gen(12))
    with pytest.warns(RuntimeWarning, match="no memory_a"):
        got = get_loss("cmcr", memory=8, noise_std=0.0)(za, zb)
    assert torch.equal(got, cmcr_loss(za, zb, noise_std=0.0))


def test_cmcr_vmap_over_tasks_with_a_shared_bank_equals_a_loop():
    za = torch.randn(3, 6, 4, generator=_gen(13))
    zb = torch.randn(3, 6, 4, generator=_gen(14))
    ma, mb = torch.randn(10, 4, generator=_gen(15)), torch.randn(10, 4, generator=_gen(16))
    loss = get_loss("cmcr", memory=10, noise_std=0.0, temperature=0.2, memory_temperature=0.1)
    batched = vmap(lambda a, b: loss(a, b, memory_a=ma, memory_b=mb))(za, zb)
    looped = torch.stack([loss(za[t], zb[t], memory_a=ma, memory_b=mb) for t in range(3)])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)


def test_align_family_memory_bank_is_seeded_meta_train_rows(bench):
    model = _model(bench)
    inputs = model_inputs(model, bench, "cpu")
    spy = _Spy(get_loss("cmcr", memory=16, noise_std=0.0))
    fam = AlignFamily(bench, inputs, loss_module=spy, batch_size=8, seed=0)
    assert fam.objective_settings == {"memory": 16}
    assert fam.bank_source.shape == (16, *inputs[bench.source].shape[1:])
    # every bank item is a meta-train alignment row
    src_pool = inputs[bench.source][bench.align_source_rows]
    tgt_pool = inputs[bench.target][bench.align_target_rows]
    assert all((src_pool == r).all(dim=-1).any() for r in fam.bank_source)
    assert all((tgt_pool == r).all(dim=-1).any() for r in fam.bank_target)
    # same seed, same bank; another seed, another bank
    again = AlignFamily(bench, inputs, loss_module=spy, batch_size=8, seed=0)
    other = AlignFamily(bench, inputs, loss_module=spy, batch_size=8, seed=1)
    assert torch.equal(again.bank_source, fam.bank_source) and torch.equal(again.bank_target, fam.bank_target)
    assert not torch.equal(other.bank_source, fam.bank_source)
    # the loss is cmcr over the batch with the embedded bank as memory
    batch = {k: v[0] for k, v in fam.sample([2]).items()}
    got = fam.loss(model, batch)
    zs, zt = model.embed(bench.source, batch["xs"]), model.embed(bench.target, batch["xt"])
    mem_a, mem_b = model.embed(bench.source, fam.bank_source), model.embed(bench.target, fam.bank_target)
    assert torch.equal(got, cmcr_loss(zs, zt, memory_a=mem_a, memory_b=mem_b, noise_std=0.0))
    assert torch.equal(spy.seen[0]["memory_a"], mem_a)


def test_align_family_memory_zero_builds_no_bank(bench):
    model = _model(bench)
    loss = get_loss("cmcr", noise_std=0.0)
    fam = AlignFamily(bench, model_inputs(model, bench, "cpu"), loss_module=loss, batch_size=8, seed=0)
    assert fam.bank_source is None and fam.objective_settings == {}
    batch = {k: v[0] for k, v in fam.sample([1]).items()}
    zs, zt = model.embed(bench.source, batch["xs"]), model.embed(bench.target, batch["xt"])
    assert torch.equal(fam.loss(model, batch), cmcr_loss(zs, zt, noise_std=0.0))


@pytest.mark.parametrize("loss", [get_loss("cmcr", memory=12, noise_std=0.0), get_loss("cwcl")])
def test_align_family_vmapped_over_tasks_equals_a_loop(bench, loss):
    """Batched parameters and batches (the inner loop's layout) vs one task at a time."""
    fb = _frozen(bench)
    models = [_model(fb, seed=s) for s in range(3)]
    fam = AlignFamily(fb, model_inputs(models[0], fb, "cpu"), loss_module=loss, batch_size=8, seed=0)
    fm = FunctionalModel(models[0])
    params = [dict(m.named_parameters()) for m in models]
    stacked = {k: torch.stack([p[k].detach() for p in params]) for k in params[0]}
    batch = fam.sample([0, 1, 2])
    batched = vmap(lambda p, b: fm(p, fam.loss, b))(stacked, batch)
    looped = torch.stack([fm({k: v[t] for k, v in stacked.items()}, fam.loss, {k: v[t] for k, v in batch.items()})
                          for t in range(3)])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("flags", [["--loss", "cmcr", "--loss-hp", "memory=16"],
                                   ["--loss", "cwcl", "--loss-hp", "weights=frozen_source"]])
def test_cli_trains_with_the_paper_settings(run_cli, tmp_path, flags):
    rc, out, err = run_cli(["train", "synthetic", *flags, *CLI_TINY, "--checkpoint-dir", str(tmp_path / "ck")])
    assert rc == 0, err
    assert (tmp_path / "ck" / "last.pt").exists()


def test_cli_rejects_a_bad_setting(run_cli, tmp_path):
    rc, out, err = run_cli(["train", "synthetic", "--loss", "cwcl", "--loss-hp", "weights=nope", *CLI_TINY,
                            "--checkpoint-dir", str(tmp_path / "ck")])
    assert rc == 2 and "weights must be one of" in err


def test_croma_losses_lists_the_new_hyper_parameters(run_cli):
    rc, out, _ = run_cli(["losses"])
    assert rc == 0
    assert "weights=auto" in out and "memory=0" in out
