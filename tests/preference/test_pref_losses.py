"""Pairwise links and LM objectives: closed forms on fixed tensors, special cases, equivalences."""

import math

import pytest
import torch

from scorealign.preference import components as C
from scorealign.preference import losses as L
from scorealign.preference import mallows as M
from scorealign.preference.objectives import resolve

H = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
BETA = 0.5


def sp(x: float) -> float:
    """softplus: −log σ(z) = sp(−z)."""
    return math.log1p(math.exp(x))


# Closed forms in scalar math (independent of the torch code), margin h, scale β, flip rate ε.
CLOSED = {
    "sigmoid": lambda h, b: sp(-b * h),
    # IPO in the authors' scaled form (RainbowPO/MallowsPO code); TRL's is this / β².
    "ipo": lambda h, b: (b * h - 0.5) ** 2,
    "hinge": lambda h, b: max(0.0, 1.0 - b * h),
    "cdpo": lambda h, b, eps=0.2: (1 - eps) * sp(-b * h) + eps * sp(b * h),
    "robust": lambda h, b, eps=0.2: ((1 - eps) * sp(-b * h) - eps * sp(b * h)) / (1 - 2 * eps),
}


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_link_equals_closed_form(name):
    kw = {"eps": 0.2} if name in ("cdpo", "robust") else {}
    got = L.PAIRWISE.get(name).fn(H, beta=BETA, **kw)
    want = torch.tensor([CLOSED[name](float(h), BETA, **kw) for h in H])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_hand_values_of_the_links():
    # h = 0 (policy = reference): DPO is log 2; IPO is (β·0 − ½)² = ¼; hinge is 1.
    z = torch.zeros(1)
    assert math.isclose(float(L.dpo_sigmoid(z, beta=BETA)), math.log(2), rel_tol=1e-7)
    assert math.isclose(float(L.ipo(z, beta=BETA)), 0.25, rel_tol=1e-7)
    assert float(L.hinge(z, beta=BETA)) == 1.0
    # IPO's minimum is at h = 1/(2β) = 1; the hinge is flat zero from βh = 1 on.
    assert float(L.ipo(torch.tensor([1.0]), beta=BETA)) == 0.0
    assert float(L.hinge(torch.tensor([2.0, 5.0]), beta=BETA).abs().sum()) == 0.0


@pytest.mark.parametrize("name", ["cdpo", "robust"])
def test_label_noise_links_reduce_to_dpo_at_eps_zero(name):
    torch.testing.assert_close(L.PAIRWISE.get(name).fn(H, beta=BETA, eps=0.0),
                               L.dpo_sigmoid(H, beta=BETA))


def test_robust_dpo_is_unbiased_under_label_flips():
    # E over a flip with prob ε of the robust loss = the clean DPO loss [Chowdhury+24, Lemma 3.1].
    eps = 0.3
    expected = (1 - eps) * L.robust(H, beta=BETA, eps=eps) + eps * L.robust(-H, beta=BETA, eps=eps)
    torch.testing.assert_close(expected, L.dpo_sigmoid(H, beta=BETA))


def test_pairwise_loss_api_takes_the_two_log_ratios():
    dw, dl = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.1, 0.5, 2.0])
    for name in ("sigmoid", "ipo", "hinge"):
        torch.testing.assert_close(L.pairwise_loss(name, dw, dl, beta=2.0),
                                   L.PAIRWISE.get(name).fn(dw - dl, beta=2.0))
    torch.testing.assert_close(L.pairwise_loss("robust", dw, dl, beta=2.0, eps=0.1),
                               L.robust(dw - dl, beta=2.0, eps=0.1))
    c = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(L.pairwise_loss("mallows_theta", dw, dl, beta=2.0, c=c),
                               L.dpo_sigmoid(c * (dw - dl), beta=2.0))
    # Policy = reference ⇒ log 2, whatever the source of the log-ratios.
    torch.testing.assert_close(L.pairwise_loss("sigmoid", dw, dw, beta=5.0),
                               torch.full((3,), math.log(2)))


# ---------------------------------------------------------------------------------------------
# Objectives on sequence log-probs.
# ---------------------------------------------------------------------------------------------

LOGP_W, LOGP_L = [-10.0, -4.0, -7.0], [-12.0, -3.0, -7.5]
LEN_W, LEN_L = [5.0, 2.0, 7.0], [4.0, 3.0, 5.0]
REF_W, REF_L = [-11.0, -4.5, -6.0], [-11.5, -2.0, -8.0]


def _lp(ref=True, entropy=None):
    t = lambda x: torch.tensor(x)  # noqa: E731
    return L.PairLogps(t(LOGP_W), t(LOGP_L), t(LEN_W), t(LEN_L), t(REF_W) if ref else None,
                       t(REF_L) if ref else None, None if entropy is None else t(entropy))


def _rows():
    return list(zip(LOGP_W, LOGP_L, LEN_W, LEN_L, REF_W, REF_L))


def test_dpo_objective_closed_form_and_implicit_rewards():
    out = resolve("sigmoid", {"beta": BETA})(_lp())
    want = [sp(-BETA * ((w - rw) - (l - rl))) for w, l, _, _, rw, rl in _rows()]
    torch.testing.assert_close(out.losses, torch.tensor(want))
    torch.testing.assert_close(out.reward_w, BETA * (torch.tensor(LOGP_W) - torch.tensor(REF_W)))
    torch.testing.assert_close(out.reward_l, BETA * (torch.tensor(LOGP_L) - torch.tensor(REF_L)))


def test_simpo_closed_form():
    beta, gamma = 2.0, 0.5
    out = L.simpo(_lp(ref=False), beta=beta, gamma=gamma)
    want = [sp(-(beta * w / nw - beta * l / nl - gamma)) for w, l, nw, nl, _, _ in _rows()]
    torch.testing.assert_close(out.losses, torch.tensor(want))


def test_orpo_closed_form():
    lam = 0.3
    out = L.orpo(_lp(ref=False), lam=lam)
    want = []
    for w, l, nw, nl, _, _ in _rows():
        pw, pl = math.exp(w / nw), math.exp(l / nl)
        log_odds = math.log(pw / (1 - pw)) - math.log(pl / (1 - pl))
        want.append(-w / nw + lam * sp(-log_odds))
    torch.testing.assert_close(out.losses, torch.tensor(want))


def test_kto_closed_form_and_reference_point():
    logp, ref = torch.tensor([-3.0, -5.0, -2.0, -6.0]), torch.tensor([-4.0, -4.0, -2.5, -5.0])
    desirable = torch.tensor([True, True, False, False])
    z0 = L.kto_reference_point(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -2.5]))
    assert float(z0) == 0.75  # mean(1.0, 0.5), positive so not clamped
    assert float(L.kto_reference_point(torch.tensor([-3.0]), torch.tensor([-1.0]))) == 0.0
    beta, ld, lu = 0.5, 1.0, 1.5
    losses, rewards = L.kto(logp, ref, desirable, z0=z0, beta=beta, lambda_d=ld, lambda_u=lu)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = []
    for r, d in zip((logp - ref).tolist(), desirable.tolist()):
        want.append(ld * (1 - sig(beta * (r - 0.75))) if d else lu * (1 - sig(beta * (0.75 - r))))
    torch.testing.assert_close(losses, torch.tensor(want))
    torch.testing.assert_close(rewards, beta * (logp - ref))


# ---------------------------------------------------------------------------------------------
# RainbowPO: reductions to DPO and SimPO, and each component's closed form.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["sigmoid", "ipo", "hinge"])
def test_rainbowpo_with_every_component_off_is_dpo(link):
    rb = C.rainbowpo(_lp(), beta=BETA, link=link)
    dpo = resolve(link, {"beta": BETA})(_lp())
    # Bit-exact although the margins are associated differently ((a_w − a_l) − (r_w − r_l)
    # against (a_w − r_w) − (a_l − r_l)): the log-probs are half-integers, so every sum and
    # difference is exact in fp32 and the links see the same h.
    for a, b in ((rb.losses, dpo.losses), (rb.reward_w, dpo.reward_w), (rb.reward_l, dpo.reward_l)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rainbowpo_length_norm_plus_margin_without_reference_is_simpo():
    beta, gamma = 2.5, 0.7
    rb = C.rainbowpo(_lp(ref=False), beta=beta, length_normalization=True, mixing=True,
                     mixing_alpha=0.0, margin=gamma / beta)
    sim = L.simpo(_lp(ref=False), beta=beta, gamma=gamma)
    torch.testing.assert_close(rb.losses, sim.losses)
    torch.testing.assert_close(rb.reward_w, sim.reward_w)


def test_rainbowpo_mixing_margin_and_length_normalization_closed_form():
    beta, alpha, gamma = 3.0, 0.25, 0.2
    rb = C.rainbowpo(_lp(), beta=beta, length_normalization=True, mixing=True,
                     mixing_alpha=alpha, margin=gamma)
    want = []
    for w, l, nw, nl, rw, rl in _rows():
        # π_ref^α π_γ^{1−α}: α × reference margin + (1 − α) × home advantage γ (all LN).
        h = (w / nw - l / nl) - alpha * (rw / nw - rl / nl) - (1 - alpha) * gamma
        want.append(sp(-beta * h))
    torch.testing.assert_close(rb.losses, torch.tensor(want))
    # Without mixing the margin is a plain home advantage: DPO margin minus γ.
    rb = C.rainbowpo(_lp(), beta=beta, margin=gamma)
    want = [sp(-beta * ((w - rw) - (l - rl) - gamma)) for w, l, _, _, rw, rl in _rows()]
    torch.testing.assert_close(rb.losses, torch.tensor(want))


def test_rainbowpo_sft_and_contextual_scaling_components():
    base = C.rainbowpo(_lp(), beta=BETA, length_normalization=True)
    sft = C.rainbowpo(_lp(), beta=BETA, length_normalization=True, sft_coef=0.4)
    torch.testing.assert_close(sft.losses - base.losses,
                               -0.4 * torch.tensor(LOGP_W) / torch.tensor(LEN_W))
    ent = [0.3, 0.6, 0.9]
    scaled = C.rainbowpo(_lp(entropy=ent), beta=BETA, contextual_scaling=True, dispersion_scale=0.5)
    mallows = M.mallows_theta_objective(_lp(entropy=ent), beta=BETA, dispersion_scale=0.5)
    torch.testing.assert_close(scaled.losses, mallows.losses)


def test_rainbowpo_refuses_missing_inputs():
    with pytest.raises(ValueError, match="reference"):
        C.rainbowpo(_lp(ref=False), beta=BETA)
    with pytest.raises(ValueError, match="entropy"):
        C.rainbowpo(_lp(), beta=BETA, contextual_scaling=True)


def test_rso_accepts_by_reward_and_pairs_best_first():
    g = torch.Generator().manual_seed(0)
    rewards = torch.tensor([0.0, 5.0, 1.0, 4.0, -3.0])
    # β → 0: π* is greedy on reward, so acceptance follows the reward order exactly.
    assert C.rso_sample(rewards, beta=1e-4, num_samples=4, generator=g) == [1, 3, 2, 0]
    # β → ∞: π* = π_sft, every candidate is accepted in the first sweep.
    assert sorted(C.rso_sample(rewards, beta=1e6, num_samples=5, generator=g)) == [0, 1, 2, 3, 4]
    for w, l in C.rso_pairs(rewards, beta=1.0, num_pairs=2, generator=g):
        assert rewards[w] > rewards[l]


# ---------------------------------------------------------------------------------------------
# Registry hygiene and name resolution.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(L.PAIRWISE))
def test_every_link_is_documented_finite_and_has_finite_gradients(name):
    entry = L.PAIRWISE.get(name)
    assert entry.paper and entry.equation
    h = torch.tensor([-1e4, -30.0, -1.0, 0.0, 1e-7, 1.0, 30.0, 1e4], requires_grad=True)
    kw = {"c": torch.full((8,), 0.7)} if "per_pair_params" in entry.properties else {}
    loss = entry.fn(h, beta=0.1, **kw)
    assert loss.shape == h.shape and torch.isfinite(loss).all()
    (grad,) = torch.autograd.grad(loss.sum(), h)
    assert torch.isfinite(grad).all()
    if "decreasing_in_h" in entry.properties:
        assert (grad <= 0).all()


@pytest.mark.parametrize("name", ["sigmoid", "ipo", "hinge", "cdpo", "robust", "simpo", "orpo",
                                  "rainbowpo", "mallows_theta", "mallows_phi"])
def test_every_objective_is_finite_with_finite_gradients(name):
    lp = _lp(entropy=[0.3, 0.6, 0.9])
    logp_w = lp.logp_w.clone().requires_grad_()
    lp = L.PairLogps(logp_w, lp.logp_l, lp.len_w, lp.len_l, lp.ref_logp_w, lp.ref_logp_l,
                     lp.ref_entropy)
    out = resolve(name)(lp)
    assert out.losses.shape == (3,) and torch.isfinite(out.losses).all()
    (grad,) = torch.autograd.grad(out.losses.sum(), logp_w)
    assert torch.isfinite(grad).all()


def test_resolve_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="unknown loss 'dpoo'"):
        resolve("dpoo")
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['betta'\]"):
        resolve("sigmoid", {"betta": 0.1})
    with pytest.raises(ValueError, match="link 'mallows_theta' is not available"):
        resolve("rainbowpo", {"link": "mallows_theta"})
    assert not resolve("simpo").needs_reference
    assert not resolve("rainbowpo", {"mixing": True, "mixing_alpha": 0.0}).needs_reference
    assert resolve("rainbowpo", {"contextual_scaling": True}).needs_entropy
    assert resolve("kto").unpaired
