"""croma.losses: every objective against a naive loop reference and a hand-derived value, plus
CWCL/CLIP/PCMC identities, masks, vmap/grad safety, dtypes, registry behaviour and errors."""

import math

import pytest
import torch
from torch.func import grad, vmap

from croma.losses import (
    LossModule,
    clip_loss,
    cmcr_loss,
    cwcl_loss,
    get_loss,
    list_losses,
    loss_info,
    nce_loss,
    pcmc_loss,
    pcmr_loss,
    register_loss,
)

F64 = torch.float64
NAMES = ["clip", "cmcr", "cwcl", "nce", "pcmc", "pcmr"]
C = 1 / math.sqrt(2)


def _rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _close(a, b, tol=1e-10):
    torch.testing.assert_close(torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64), atol=tol, rtol=tol)


# ----------------------------------------------------------------------------- naive references
def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _rows(z):
    return [_unit([float(x) for x in row]) for row in z]


def _dot(u, v):
    return sum(x * y for x, y in zip(u, v))


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def naive_nce(zs, zt):
    s, t = _rows(zs), _rows(zt)
    n = len(s)
    total = 0.0
    for i in range(n):
        neg = sum(_dot(s[i], t[j]) for j in range(n) if j != i) / (n - 1)
        total += -_dot(s[i], t[i]) + neg
    return total / n


def _ce_rows(a, b, tau, rows=None, cols=None):
    """Mean over anchors p in `rows` of -log softmax over candidates q in `cols` at q = p."""
    n = len(a)
    rows = range(n) if rows is None else rows
    cols = list(range(n)) if cols is None else cols
    losses = []
    for p in rows:
        logits = [_dot(a[p], b[q]) / tau for q in cols]
        losses.append(-(_dot(a[p], b[p]) / tau - _lse(logits)))
    return sum(losses) / len(losses) if losses else 0.0


def naive_clip(za, zb, tau):
    a, b = _rows(za), _rows(zb)
    return 0.5 * (_ce_rows(a, b, tau) + _ce_rows(b, a, tau))


def naive_cwcl(zu, zv, tau, wf=None):
    u, v = _rows(zu), _rows(zv)
    w = _rows(zv if wf is None else wf)
    n = len(u)
    first = 0.0
    for i in range(n):
        logits = [_dot(u[i], v[j]) / tau for j in range(n)]
        lse = _lse(logits)
        weights = [_dot(w[i], w[j]) / 2 + 0.5 for j in range(n)]
        first += sum(weights[j] * (logits[j] - lse) for j in range(n)) / sum(weights)
    return -first / n + _ce_rows(v, u, tau)


def naive_pcmc(embs, tau, present=None):
    xs = [_rows(z) for z in embs]
    n, m = len(xs[0]), len(xs)
    pres = [[True] * m for _ in range(n)] if present is None else present.tolist()
    total = 0.0
    for i in range(m):
        for j in range(i + 1, m):
            rows = [p for p in range(n) if pres[p][i] and pres[p][j]]
            if not rows:
                continue
            ce_ij = _ce_rows(xs[i], xs[j], tau, rows, [q for q in range(n) if pres[q][j]])
            ce_ji = _ce_rows(xs[j], xs[i], tau, rows, [q for q in range(n) if pres[q][i]])
            total += 0.5 * (ce_ij + ce_ji)
    return total


def naive_pcmr(embs, rho, threshold, present=None):
    xs = [_rows(z) for z in embs]
    n, m = len(xs[0]), len(xs)
    pres = [[True] * m for _ in range(n)] if present is None else present.tolist()
    target = [[0.0] * n for _ in range(n)]
    for p in range(n):
        for q in range(n):
            sims = [_dot(xs[k][p], xs[k][q]) for k in range(m) if pres[p][k] and pres[q][k]]
            target[p][q] = 1.0 if p == q or (sims and max(sims) > threshold) else 0.0
    total = 0.0
    for i in range(m):
        for j in range(i + 1, m):
            sq = 0.0
            for p in range(n):
                for q in range(n):
                    h = 1.0 if pres[p][i] and pres[q][j] else 0.0
                    sq += (h * (_dot(xs[i][p], xs[j][q]) - target[p][q])) ** 2
            total += sq ** ((2 + rho) / 2)
    return total


def naive_cmcr(za, zb, mem_a=None, mem_b=None, eps_a=None, eps_b=None, tau=0.01, tau_m=0.01, lam=0.1):
    a, b = _rows(za), _rows(zb)
    ma = a if mem_a is None else _rows(mem_a)
    mb = b if mem_b is None else _rows(mem_b)
    if eps_a is not None:
        a = [_unit([x + e for x, e in zip(row, er)]) for row, er in zip(a, eps_a.tolist())]
        b = [_unit([x + e for x, e in zip(row, er)]) for row, er in zip(b, eps_b.tolist())]

    def agg(x, mem):
        out = []
        for row in x:
            logits = [_dot(row, mk) / tau_m for mk in mem]
            lse = _lse(logits)
            wts = [math.exp(lg - lse) for lg in logits]
            out.append([sum(w * mk[d] for w, mk in zip(wts, mem)) for d in range(len(row))])
        return out

    p, q = agg(a, ma), agg(b, mb)
    pu, qu = [_unit(r) for r in p], [_unit(r) for r in q]
    clip_ab = 0.5 * (_ce_rows(a, b, tau) + _ce_rows(b, a, tau))
    clip_pq = 0.5 * (_ce_rows(pu, qu, tau) + _ce_rows(qu, pu, tau))

    def dist(u, v):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(u, v)))

    intra = 0.5 * sum(dist(a[i], p[i]) + dist(b[i], q[i]) for i in range(len(a))) / len(a)
    return clip_ab + clip_pq + lam * intra


# ----------------------------------------------------------------------------- vs naive loops
def test_nce_vs_naive():
    zs, zt = _rand(5, 3, seed=1), _rand(5, 3, seed=2)
    _close(nce_loss(zs, zt), naive_nce(zs, zt))


@pytest.mark.parametrize("tau", [0.07, 1.0])
def test_clip_vs_naive(tau):
    za, zb = _rand(5, 3, seed=1), _rand(5, 3, seed=2)
    _close(clip_loss(za, zb, temperature=tau), naive_clip(za, zb, tau))


@pytest.mark.parametrize("with_wf", [False, True])
def test_cwcl_vs_naive(with_wf):
    zu, zv = _rand(5, 3, seed=1), _rand(5, 3, seed=2)
    wf = _rand(5, 4, seed=3) if with_wf else None
    _close(cwcl_loss(zu, zv, temperature=0.1, weights_from=wf), naive_cwcl(zu, zv, 0.1, wf))


def test_pcmc_vs_naive_three_modalities():
    embs = [_rand(4, 3, seed=s) for s in (1, 2, 3)]
    _close(pcmc_loss(embs, temperature=0.2), naive_pcmc(embs, 0.2))


def test_pcmr_vs_naive():
    embs = [_rand(4, 3, seed=s) for s in (1, 2, 3)]
    # the threshold 0.3 makes some off-diagonal targets 1 (checked below), so T is exercised
    _close(pcmr_loss(embs, rho=1.0, threshold=0.3), naive_pcmr(embs, 1.0, 0.3))
    _close(pcmr_loss(embs, rho=0.5, threshold=0.99), naive_pcmr(embs, 0.5, 0.99))
    assert pcmr_loss(embs, threshold=0.3) != pcmr_loss(embs, threshold=0.99)


def test_cmcr_vs_naive_with_memory_and_noise():
    za, zb = _rand(4, 3, seed=1), _rand(4, 3, seed=2)
    mem_a, mem_b = _rand(6, 3, seed=3), _rand(6, 3, seed=4)
    got = cmcr_loss(za, zb, memory_a=mem_a, memory_b=mem_b, noise_std=0.1, temperature=0.2,
                    memory_temperature=0.3, intra_weight=0.5, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same draws in the same order: noise of a, then b
    eps_a = 0.1 * torch.randn(4, 3, generator=g, dtype=F64)
    eps_b = 0.1 * torch.randn(4, 3, generator=g, dtype=F64)
    _close(got, naive_cmcr(za, zb, mem_a, mem_b, eps_a, eps_b, tau=0.2, tau_m=0.3, lam=0.5))


def test_cmcr_vs_naive_default_memory_no_noise():
    za, zb = _rand(5, 3, seed=5), _rand(5, 3, seed=6)
    _close(cmcr_loss(za, zb, noise_std=0.0, temperature=0.5, memory_temperature=0.5),
           naive_cmcr(za, zb, tau=0.5, tau_m=0.5))


# ----------------------------------------------------------------------------- hand-derived values
I2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=F64)  # normalises to the identity
T2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64)  # rows (1,1)/√2 and (1,-1)/√2


def test_nce_by_hand():
    # ŝ = I, t̂ = I: S = I, pos = 1, neg = 0 -> mean(0 - 1) = -1
    _close(nce_loss(I2, I2), -1.0)
    # ŝ = I, t̂ = T2/√2: S = [[c, c], [c, -c]] with c = 1/√2; pos = [c, -c], neg (N-1 = 1) = [c, c]
    # -> mean([c - c, c + c]) = c
    _close(nce_loss(I2, T2), C)


def test_clip_by_hand():
    # S = I/τ with τ = 1: each row's CE = -log(e / (e + 1)) = log(1 + e⁻¹); both directions alike
    _close(clip_loss(I2, I2, temperature=1.0), math.log1p(math.exp(-1)))
    # τ = 0.5: S = 2I -> log(1 + e⁻²)
    _close(clip_loss(I2, I2, temperature=0.5), math.log1p(math.exp(-2)))
    # S = [[c, c], [c, -c]] (symmetric, so CE(S) = CE(Sᵀ)); row 0: -c + log(2eᶜ) = log 2;
    # row 1: c + log(eᶜ + e⁻ᶜ) = c + log(2 cosh c) -> ½ (log 2 + c + log(2 cosh c))
    _close(clip_loss(I2, T2, temperature=1.0), 0.5 * (math.log(2) + C + math.log(2 * math.cosh(C))))


def test_cwcl_by_hand():
    # û = v̂ = I, τ = 1: S = I; W = ŵŵᵀ/2 + ½ = [[1, ½], [½, 1]] (w = v).
    # Row 0, with L = log(1 + e): log softmax = [1 - L, -L];
    # -(1·(1 - L) + ½·(-L)) / 1.5 = L - 2/3; row 1 is the same by symmetry.
    # CE(Sᵀ, diag) = log(1 + e⁻¹).  Total = log(1 + e) - 2/3 + log(1 + e⁻¹).
    _close(cwcl_loss(I2, I2, temperature=1.0), math.log1p(math.e) - 2 / 3 + math.log1p(math.exp(-1)))


def test_pcmc_by_hand_with_mask():
    # three modalities, all = I, τ = 1: every pair gives log(1 + e⁻¹).
    ll = math.log1p(math.exp(-1))
    _close(pcmc_loss([I2, I2, I2], temperature=1.0), 3 * ll)
    # sample 1 lacks modality 2. Pair (0,1): ll. Pair (0,2): only row 0 counts; towards modality 2
    # the only candidate is item 0 -> CE 0; towards modality 0 both candidates -> ll; term ½ ll.
    # Pair (1,2): the same, ½ ll.  Total 2 ll.
    present = torch.tensor([[True, True, True], [True, True, False]])
    _close(pcmc_loss([I2, I2, I2], temperature=1.0, present=present), 2 * ll)


def test_pcmr_by_hand():
    # x⁽⁰⁾ = I, x⁽¹⁾ = T2/√2: intra-modal off-diagonal cosines are 0 -> T = I.
    # S - T = [[c-1, c], [c, -c-1]]: Σ² = (1-c)² + 2c² + (1+c)² = 2 + 4c² = 4.
    # ρ = 1: 4^(3/2) = 8;  ρ = 0: 4.
    _close(pcmr_loss([I2, T2], rho=1.0), 8.0)
    _close(pcmr_loss([I2, T2], rho=0.0), 4.0)
    # x⁽⁰⁾ rows identical (cos 1 > 0.99) -> T = all ones; x⁽¹⁾ = I -> S = [[1, 0], [1, 0]];
    # S - T = [[0, -1], [0, -1]]: Σ² = 2 -> 2^(3/2)
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)
    _close(pcmr_loss([same, I2], rho=1.0), 2 ** 1.5)
    # mask: sample 1 lacks modality 1. H = present[:,0] ⊗ present[:,1] = [[1, 0], [1, 0]];
    # T = I (modality 0 cosine 0; modality 1 not shared). H⊙(S-T) = [[c-1, 0], [c, 0]]
    # Σ² = (1-c)² + c² = 2 - √2 -> (2 - √2)^(3/2)
    present = torch.tensor([[True, True], [True, False]])
    _close(pcmr_loss([I2, T2], present=present), (2 - math.sqrt(2)) ** 1.5)


def test_cmcr_by_hand():
    # â = b̂ = I, no noise, memories = the batch, τ = τ_mem = 1, λ = 0.1.
    # p_0 = softmax([1, 0]) · I = [σ, 1-σ], σ = e/(1+e); p_1 = [1-σ, σ]; q = p.
    # clip(ã, b̃) = log(1 + e⁻¹). p̂_0·p̂_1 = r = 2σ(1-σ) / (σ² + (1-σ)²) -> clip(p, q) = log(1 + e^(r-1)).
    # ‖ã_i - p_i‖ = √2 (1-σ) for every i, both spaces -> ½ · mean(2 √2 (1-σ)) = √2 (1-σ).
    s = math.e / (1 + math.e)
    r = 2 * s * (1 - s) / (s ** 2 + (1 - s) ** 2)
    want = math.log1p(math.exp(-1)) + math.log1p(math.exp(r - 1)) + 0.1 * math.sqrt(2) * (1 - s)
    _close(cmcr_loss(I2, I2, noise_std=0.0, temperature=1.0, memory_temperature=1.0, intra_weight=0.1), want)


# ----------------------------------------------------------------------------- identities
def test_cwcl_with_identity_weights_is_clip_one_direction():
    # N = 2 and w_1 = -w_0 give W = [[1, 0], [0, 1]]: the first term is CE(S, diag), so
    # cwcl = CE(S, diag) + CE(Sᵀ, diag) = 2 · clip.
    zu, zv = _rand(2, 3, seed=1), _rand(2, 3, seed=2)
    wf = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=F64)
    tau = 0.3
    s = torch.nn.functional.normalize(zu, dim=-1) @ torch.nn.functional.normalize(zv, dim=-1).T / tau
    ce_s = torch.nn.functional.cross_entropy(s, torch.arange(2))
    ce_st = torch.nn.functional.cross_entropy(s.T, torch.arange(2))
    got = cwcl_loss(zu, zv, temperature=tau, weights_from=wf)
    _close(got - ce_st, ce_s)
    _close(got, 2 * clip_loss(zu, zv, temperature=tau))


def test_cwcl_no_gradient_into_weights():
    zu, zv = _rand(4, 3, seed=1).requires_grad_(), _rand(4, 3, seed=2).requires_grad_()
    wf = _rand(4, 5, seed=3).requires_grad_()
    cwcl_loss(zu, zv, weights_from=wf).backward()
    assert wf.grad is None and zu.grad is not None
    # functional: d loss / d weights_from is exactly zero
    g_wf = grad(lambda w: cwcl_loss(zu.detach(), zv.detach(), weights_from=w))(wf.detach())
    assert torch.equal(g_wf, torch.zeros_like(g_wf))
    # default W = W(z_v) is detached: grad wrt z_v equals the one with a frozen copy of z_v as weights
    gv = grad(lambda v: cwcl_loss(zu.detach(), v))(zv.detach())
    gv_frozen = grad(lambda v: cwcl_loss(zu.detach(), v, weights_from=zv.detach().clone()))(zv.detach())
    torch.testing.assert_close(gv, gv_frozen, atol=1e-12, rtol=0)

    # ... and differs from the gradient when W is *not* detached (so the check above means something)
    def undetached(v):
        vh = torch.nn.functional.normalize(v, dim=-1)
        uh = torch.nn.functional.normalize(zu.detach(), dim=-1)
        w = vh @ vh.T / 2 + 0.5
        s = uh @ vh.T / 0.07
        first = -((w * torch.log_softmax(s, -1)).sum(-1) / w.sum(-1)).mean()
        return first + torch.nn.functional.cross_entropy(s.T, torch.arange(4))

    _close(undetached(zv.detach()), cwcl_loss(zu.detach(), zv.detach()))
    assert (grad(undetached)(zv.detach()) - gv).abs().max() > 1e-6


def test_pcmc_two_modalities_equals_clip_and_three_is_pair_sum():
    a, b, c = _rand(5, 4, seed=1), _rand(5, 4, seed=2), _rand(5, 4, seed=3)
    _close(pcmc_loss([a, b], temperature=0.1), clip_loss(a, b, temperature=0.1))
    pairs = clip_loss(a, b, 0.1) + clip_loss(a, c, 0.1) + clip_loss(b, c, 0.1)
    _close(pcmc_loss([a, b, c], temperature=0.1), pairs)


# ----------------------------------------------------------------------------- masks
MASK = torch.tensor([[True, True, True], [True, False, True], [False, True, True], [True, True, False],
                     [True, True, True]])


def test_pcmc_mask_vs_naive_and_all_true():
    embs = [_rand(5, 3, seed=s) for s in (1, 2, 3)]
    _close(pcmc_loss(embs, temperature=0.2, present=MASK), naive_pcmc(embs, 0.2, MASK))
    _close(pcmc_loss(embs, 0.2, present=torch.ones(5, 3, dtype=torch.bool)), pcmc_loss(embs, 0.2))


def test_pcmc_mask_gradients_finite_even_when_a_modality_is_absent():
    embs = [_rand(4, 3, seed=s).requires_grad_() for s in (1, 2, 3)]
    present = torch.ones(4, 3, dtype=torch.bool)
    present[:, 2] = False  # modality 2 absent everywhere: its pairs contribute 0
    loss = pcmc_loss(embs, temperature=0.07, present=present)
    _close(loss.detach(), pcmc_loss([e.detach() for e in embs[:2]], temperature=0.07))
    loss.backward()
    for e in embs:
        assert torch.isfinite(e.grad).all()
    assert torch.equal(embs[2].grad, torch.zeros_like(embs[2].grad))


def test_pcmr_mask_vs_naive_and_all_true():
    embs = [_rand(5, 3, seed=s) for s in (1, 2, 3)]
    _close(pcmr_loss(embs, threshold=0.3, present=MASK), naive_pcmr(embs, 1.0, 0.3, MASK))
    _close(pcmr_loss(embs, present=torch.ones(5, 3, dtype=torch.bool)), pcmr_loss(embs))


def test_masked_losses_under_vmap_with_batched_masks():
    embs = [_rand(4, 5, 3, seed=s) for s in (1, 2, 3)]
    masks = torch.stack([MASK, MASK.flip(0), torch.ones_like(MASK), MASK.roll(1, 1)])
    for fn in (pcmc_loss, pcmr_loss):
        got = vmap(lambda x, y, z, m: fn([x, y, z], present=m))(*embs, masks)
        want = torch.stack([fn([embs[0][k], embs[1][k], embs[2][k]], present=masks[k]) for k in range(4)])
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------- vmap / grad / dtypes
def _module(name, **hp):
    return get_loss(name, **({"noise_std": 0.0} if name == "cmcr" else {}), **hp)


def _cmcr_intra_grad_tol(z: torch.Tensor, tau_mem: float, weight: float) -> torch.Tensor:
    """Per-row bound ``[N, 1]`` on how far two roundings of cmcr's gradient w.r.t. ``z`` may differ.

    The intra term ``w/(2N) Σ_i ‖x̂_i − p_i‖`` (x̂ = normalise(z), p_i its memory aggregate, the
    memory being the detached batch) has gradient ``w/(2N) J_iᵀ u_i`` with ``u_i = d_i / ‖d_i‖``,
    ``d_i = x̂_i − p_i``. At τ_mem = 0.01 the attention is one-hot to rounding level, so ``‖d_i‖`` can
    be 1e-14 or smaller: the direction ``u_i`` is then defined by the last bits of ``d_i``, and bmm
    (vmap) and mm (loop) round those bits differently (they do on Intel Xeon, not on AMD EPYC).
    Forward error of ``d_i``: ``δ ≤ 2 ε √D (K + 2/τ_mem)`` (K-term sums of unit-vector products, and
    softmax logits scaled by 1/τ_mem); direction error ``≤ min(2, 2 δ / ‖d_i‖)``; ``‖J_i‖ ≤
    (1 + 2 (1 − max_k attn_ik) / τ_mem) / ‖z_i‖`` (normalisation times the aggregation's Jacobian).
    """
    from croma.losses.cmcr import _aggregate, _normalize

    n, d = z.shape
    eps = torch.finfo(z.dtype).eps
    x = _normalize(z)
    dist = torch.linalg.vector_norm(x - _aggregate(x, x, tau_mem), dim=-1)  # [N]
    attn = torch.softmax(x @ x.T / tau_mem, dim=-1)
    delta = 2 * eps * math.sqrt(d) * (n + 2 / tau_mem)
    direction = torch.clamp(2 * delta / dist, max=2.0)  # inf where d_i == 0 -> 2
    jac = (1 + 2 * (1 - attn.max(-1).values) / tau_mem) / torch.linalg.vector_norm(z, dim=-1)
    return (weight / (2 * n) * jac * direction)[:, None]


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_four_tasks_equals_loop(name):
    loss = _module(name)
    zs, zt = _rand(4, 6, 3, seed=1), _rand(4, 6, 3, seed=2)
    got = vmap(loss)(zs, zt)
    want = torch.stack([loss(zs[k], zt[k]) for k in range(4)])
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    g_got = vmap(grad(loss, argnums=(0, 1)))(zs, zt)
    for k in range(4):
        gs, gt = _autograd(loss, zs[k], zt[k])
        assert torch.isfinite(gs).all() and torch.isfinite(gt).all()
        for got_k, want_k, z in ((g_got[0][k], gs, zs[k]), (g_got[1][k], gt, zt[k])):
            # every other term is well conditioned (|grad| ~ 1/τ, errors ~ ε/τ²): 1e-10 / 1e-8 hold;
            # cmcr's intra term adds its own, derived, per-row bound (see _cmcr_intra_grad_tol)
            extra = _cmcr_intra_grad_tol(z, 0.01, 0.1) if name == "cmcr" else torch.zeros(z.shape[0], 1, dtype=F64)
            bound = 1e-10 + 1e-8 * want_k.abs() + extra
            worst = ((got_k - want_k).abs() - bound).max()
            assert worst <= 0, f"{name}: vmap and loop gradients differ by {worst:.3g} beyond the derived bound"


def test_cmcr_intra_grad_tol_is_tight_where_well_conditioned():
    """The derived bound is not a blanket: rows whose aggregate is far from the item get ~1e-12."""
    z = _rand(6, 3, seed=5)
    tol = _cmcr_intra_grad_tol(z, 1.0, 0.1)  # τ_mem = 1: soft attention, ‖d_i‖ of order 1
    assert float(tol.max()) < 1e-12


def _autograd(loss, a, b):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    return torch.autograd.grad(loss(a, b), [a, b])


def test_cmcr_noise_under_vmap_needs_randomness_flag():
    zs, zt = _rand(4, 6, 3, seed=1), _rand(4, 6, 3, seed=2)
    fn = lambda a, b: cmcr_loss(a, b, noise_std=0.1)  # noqa: E731
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(fn)(zs, zt)
    g = torch.Generator().manual_seed(0)
    out = vmap(lambda a, b: cmcr_loss(a, b, noise_std=0.1, generator=g), randomness="different")(zs, zt)
    assert out.shape == (4,) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_float64_and_keeps_dtype(name):
    loss = _module(name)
    zs, zt = _rand(6, 4, seed=1), _rand(6, 4, seed=2)
    out64 = loss(zs, zt)
    out32 = loss(zs.float(), zt.float())
    assert out64.dtype == F64 and out32.dtype == torch.float32 and out32.shape == ()
    torch.testing.assert_close(out32.double(), out64, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_modified(name):
    zs, zt = _rand(5, 3, seed=1), _rand(5, 3, seed=2)
    before = (zs.clone(), zt.clone(), zs._version, zt._version)
    _module(name)(zs, zt)
    assert torch.equal(zs, before[0]) and torch.equal(zt, before[1])
    assert (zs._version, zt._version) == before[2:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_gpu_matches_cpu(name):
    loss = _module(name)
    zs, zt = _rand(8, 4, seed=1), _rand(8, 4, seed=2)
    out = loss(zs.cuda(), zt.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), loss(zs, zt), atol=1e-8, rtol=1e-8)
    got = vmap(loss)(zs.cuda().expand(4, 8, 4), zt.cuda().expand(4, 8, 4))
    torch.testing.assert_close(got.cpu(), loss(zs, zt).expand(4), atol=1e-8, rtol=1e-8)
    noisy = get_loss("cmcr")(zs.cuda(), zt.cuda())  # module's own generator lives on the device
    assert torch.isfinite(noisy)


# ----------------------------------------------------------------------------- registry
def test_registry_lists_six_sorted_names():
    assert list_losses() == NAMES
    for name in NAMES:
        info = loss_info(name)
        assert info.paper and info.formula and info.name == name
        assert dict(get_loss(name).hparams) == dict(info.hyper)
    assert loss_info("cwcl").hyper == {"temperature": 0.07, "weights": "auto"}
    assert loss_info("pcmr").hyper == {"rho": 1.0, "threshold": 0.99}


def test_get_loss_errors():
    with pytest.raises(ValueError, match=r"unknown loss 'nope' \(available: clip, cmcr, cwcl, nce, pcmc, pcmr\)"):
        get_loss("nope")
    with pytest.raises(ValueError, match="unknown hyper-parameter 'temp' for loss 'clip'"):
        get_loss("clip", temp=0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        get_loss("cwcl", temperature=0.0)
    with pytest.raises(ValueError, match="'temperature' of loss 'clip' must be a number"):
        get_loss("clip", temperature="0.1")
    with pytest.raises(ValueError, match="rho must be >= 0"):
        get_loss("pcmr", rho=-1.0)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        get_loss("cmcr", noise_std=-0.1)
    with pytest.raises(ValueError, match="unknown context argument 'mask' for loss 'pcmc'"):
        get_loss("pcmc")(_rand(3, 2), _rand(3, 2), mask=None)


def test_register_loss_rejects_duplicates_and_non_modules():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("clip", paper="x", hyper={})(type("Dup", (LossModule,), {}))
    with pytest.raises(ValueError, match="LossModule subclass"):
        register_loss("zzz_not_a_module", paper="x", hyper={})(object)
    assert list_losses() == NAMES


def test_modules_map_source_and_target():
    zs, zt = _rand(5, 3, seed=1), _rand(5, 3, seed=2)
    wf = _rand(5, 4, seed=3)
    present = torch.tensor([[True, True], [True, False], [True, True], [False, True], [True, True]])
    _close(get_loss("nce")(zs, zt), nce_loss(zs, zt))
    _close(get_loss("clip", temperature=0.2)(zs, zt), clip_loss(zs, zt, 0.2))
    # cwcl: target = U (taught), source = V (supervising)
    _close(get_loss("cwcl", temperature=0.2)(zs, zt), cwcl_loss(zt, zs, temperature=0.2))
    _close(get_loss("cwcl")(zs, zt, weights_from=wf), cwcl_loss(zt, zs, weights_from=wf))
    assert abs(float(cwcl_loss(zs, zt)) - float(cwcl_loss(zt, zs))) > 1e-6
    _close(get_loss("pcmc")(zs, zt, present=present), pcmc_loss([zs, zt], present=present))
    _close(get_loss("pcmr", rho=0.5)(zs, zt, present=present), pcmr_loss([zs, zt], rho=0.5, present=present))
    mem = _rand(7, 3, seed=4)
    _close(get_loss("cmcr", noise_std=0.0)(zs, zt, memory_a=mem, memory_b=mem),
           cmcr_loss(zs, zt, memory_a=mem, memory_b=mem, noise_std=0.0))


def test_cmcr_module_noise_is_seeded_and_leaves_global_rng_alone():
    zs, zt = _rand(5, 3, seed=1), _rand(5, 3, seed=2)
    state = torch.random.get_rng_state()
    first = get_loss("cmcr", seed=3)(zs, zt)
    again = get_loss("cmcr", seed=3)(zs, zt)
    other = get_loss("cmcr", seed=4)(zs, zt)
    assert torch.equal(torch.random.get_rng_state(), state)
    _close(first, again)
    assert float(first) != float(other)
    _close(first, cmcr_loss(zs, zt, generator=torch.Generator().manual_seed(3)))


# ----------------------------------------------------------------------------- error messages
def test_shape_and_type_errors_name_the_argument():
    a, b = _rand(4, 3), _rand(5, 3)
    with pytest.raises(ValueError, match=r"clip_loss: z_b has shape \(5, 3\) but z_a has shape \(4, 3\)"):
        clip_loss(a, b)
    with pytest.raises(ValueError, match="nce_loss: z_t has shape"):
        nce_loss(a, _rand(4, 2))
    with pytest.raises(ValueError, match=r"nce_loss: z_s needs at least 2 rows"):
        nce_loss(_rand(1, 3), _rand(1, 3))
    with pytest.raises(ValueError, match="cwcl_loss: z_u must be 2-D"):
        cwcl_loss(_rand(3), _rand(3))
    with pytest.raises(ValueError, match="cwcl_loss: weights_from has 5 rows but z_u has 4"):
        cwcl_loss(a, a, weights_from=b)
    with pytest.raises(ValueError, match="cwcl_loss: z_v has dtype torch.float32"):
        cwcl_loss(a, a.float())
    with pytest.raises(ValueError, match="z_a must be a floating-point tensor"):
        clip_loss(torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pcmc_loss: embeddings\[1\] has shape"):
        pcmc_loss([a, b])
    with pytest.raises(ValueError, match="at least 2 modalities"):
        pcmr_loss([a])
    with pytest.raises(ValueError, match=r"pcmc_loss: present has shape \(4, 3\), expected \[N, M\] = \[4, 2\]"):
        pcmc_loss([a, a], present=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="present must be a bool tensor"):
        pcmr_loss([a, a], present=torch.ones(4, 2))
    with pytest.raises(ValueError, match="cmcr_loss: memory_b has dimension 2"):
        cmcr_loss(a, a, memory_b=_rand(6, 2))
    with pytest.raises(ValueError, match="clip_loss: temperature must be > 0"):
        clip_loss(a, a, temperature=-1.0)
