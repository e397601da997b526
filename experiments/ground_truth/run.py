"""Ground truth (issue 22, item 3): the fine-tuning methods on a problem whose optimum is exact.

Problem: ``scorealign.testbed`` quadratic, d = 2 — p₀ the 8-Gaussian ring (radius 2, σ 0.3),
r(x) = −½‖x − c‖², c = (1.5, 1.5), β = 0.5 — so p*_β ∝ p₀ e^{r/β} is a Gaussian mixture with
E_{p*}[r], KL(p*_β‖p₀) and the reward–KL frontier R*(κ) in closed form (``testbed.frontier``).
The fine-tuned model is the exact base prediction plus a zero-initialized control network
(``base.type: testbed``); every arm uses the registered loss through ``rl.trainer.Finetuner``.

Protocol (``experiments/_selection.py``):

* equal reward-query budgets: P·K rollouts per epoch for E epochs for every arm (no arm queries
  the reward elsewhere; Score as Action uses the batch baseline, not the x̂₀ value design that
  costs S extra queries per row); gradient model evaluations (``cost/model_evals_grad``) and
  training CPU seconds (``time.process_time``, evaluations excluded) are recorded per cell;
* the learning rate of each arm is chosen on tuning seeds and tuning evaluation draws that are
  never reported (``_selection.split``), by the mean final reward among lrs whose mean gold
  (log p*_β) is ≥ the base model's; the grid starts at {1e-3, 3e-3, 1e-2} and is widened
  geometrically while the pick sits at an edge (``_selection.tune_grid``; ``edge: true`` if capped);
* reported runs: the chosen lr on ``--seeds`` paired seeds (≥ 20 in the full mode); all arms
  are evaluated on the same reported draws with one fine reference sampler per family (VP:
  DDPM η = 1, ``REF_STEPS`` steps; flow: the flow SDE at ``REF_STEPS``): E[r], E[log p*_β], the
  path KL of that chain to the base's (an upper bound on the terminal KL), the energy distance
  to p*_β (same n) beside the reference sampler's floor, and (final) the g²-weighted score error
  (½T·it is the path KL(P*‖P_θ)).
* paired t-intervals of differences with Welch beside them, Holm across all claims, a collapse
  column (NaN or final reward < base − ``COLLAPSE_MARGIN``).

Claims: (a) reward queries to reach 90 % of the optimal gain E_{p*_β}[r] − E_{p₀}[r] (the
frontier point at κ* = KL(p*_β‖p₀)), with the KL at that moment beside κ*, and E[r] where the
path KL crosses κ*: LOOP vs DDPO vs REINFORCE; (b) Score as Action (β = 0) trained with DDIM
(η = 0 + exploration), Euler–Maruyama and stochastic Heun at 10/20/50 steps, each evaluated with
the reference sampler, against DDPO trained with DDIM 10 and evaluated with DDIM η = 1 at
10/20/50: spread of E[r] (max − min) per seed, each SaA configuration at its own lr (tuned by
the same rule) and, beside it, all at the DDIM-10 lr; (c) the KL-regularized arms (DPOK, Score
as Action with β = 0.5 "SaA-KL", adjoint matching λ = 0.5, ...): energy distance to p*_β above
the sampler floor; (d) Flow-GRPO-Fast, MixGRPO and DanceGRPO against Flow-GRPO on (a)'s axes.

One JSON per cell under ``results/cells/<mode>``; a stopped run continues. Full (about an hour
on 2 uncontended cores) and quick (≤ 2 minutes, used by the test):

    OMP_NUM_THREADS=1 python experiments/ground_truth/run.py [--quick] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import _selection as sel  # noqa: E402
from _cells import cached, ci95, fmt_ci, map_jobs, write_json  # noqa: E402

CONFIGS = ROOT / "configs" / "finetune"
PROBLEM = {"problem": "quadratic", "dim": 2, "beta": 0.5}
COLLAPSE_MARGIN = 0.5  # reward units; the base's E[r] is −4.34, the optimum's −0.26
CLIP = 1.0e-2  # per-dimension ratio clip of every PPO-type arm (the shipped testbed configs')
SAA = ["algo.advantage=batch", "algo.value=null", "policy.exploration=0.2"]
SAA_BETA = {0.0: f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.0, gae_lambda: 1.0}}",
            0.5: f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.5, gae_lambda: 1.0}}"}
SAA_SOLVERS = {"DDIM": ["policy.sampler=ddim", "policy.eta=0.0"],
               "EM": ["policy.sampler=euler_maruyama", "policy.eta=1.0"],
               "Heun": ["policy.sampler=heun_sde", "policy.eta=1.0"]}


@dataclass(frozen=True)
class Arm:
    """One method: config file, overrides, model family, β of its objective."""

    config: str
    sets: tuple[str, ...] = ()
    family: str = "vp"
    beta: float = 0.0  # 0: reward only; > 0: KL-regularized toward p*_β
    kind: str = "rl"  # rl: rl.trainer.Finetuner; dpo: Diffusion-DPO on BT-labelled base pairs

    def overrides(self) -> list[str]:
        return list(self.sets) + (["base.sde=flow"] if self.family == "flow" else [])


ARMS = {
    "REINFORCE": Arm("digits_reinforce.yaml", ("policy.sampler=ddim", "policy.eta=1.0")),
    "DDPO": Arm("testbed_ddpo.yaml", (f"algo.loss_kwargs={{clip: {CLIP}}}",)),
    "LOOP": Arm("testbed_loop.yaml", (f"algo.loss_kwargs={{clip: {CLIP}}}",)),
    "GRPO": Arm("digits_grpo.yaml", (f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.0}}",)),
    "DPOK": Arm("digits_dpok.yaml", ("algo.kl=exact",
                                     f"algo.loss_kwargs={{alpha: 1.0, beta: 0.5, clip: {CLIP}}}",
                                     "algo.value={hidden: 32, lr: 3.0e-3, steps_per_epoch: 10}"),
                beta=0.5),
    # β = 0 (claim (b), beside DDPO's β = 0); SaA-KL: β = 0.5 on its own KL, that of the
    # exploration chain (DDIM η = 0 + λ = 0.2), claim (c)
    "SaA": Arm("digits_score_as_action.yaml", (*SAA_SOLVERS["DDIM"], *SAA, SAA_BETA[0.0])),
    "SaA-KL": Arm("digits_score_as_action.yaml", (*SAA_SOLVERS["DDIM"], *SAA, SAA_BETA[0.5]),
                  beta=0.5),
    "DRaFT": Arm("digits_draft.yaml", ("algo.backprop_steps=2",)),
    "AdjointMatching": Arm("digits_adjoint_matching.yaml",
                           ("algo.loss=adjoint_matching",
                            "algo.loss_kwargs={lam: 0.5, times: 5}"), beta=0.5),
    # The KL-regularized PG arms with the objective E[r] − β KL itself. Under the trainer's
    # default ratio_units=per_dim the ratio's log is divided by D, so the policy gradient is
    # ∇E[r]/D beside an undivided KL: DPOK and SaA-KL above optimize E[r] − Dβ KL (target
    # p*_{Dβ} = p*_1 at d = 2). Summed units (clip D·1e-2: the same trust region) remove that.
    # SaA-KL-SDE: β = 0.5 on the memoryless chain (DDIM η = 1, no exploration), whose KL term
    # is the discretized Girsanov path KL with optimum p*_β (testbed/problems.py); leave-one-out
    # advantages are r minus a baseline, not whitened (``batch`` divides by std_B(r), which
    # turns β into β·std_B(r)).
    "DPOK-sum": Arm("digits_dpok.yaml", ("algo.kl=exact", "algo.ratio_units=sum",
                                         f"algo.loss_kwargs={{alpha: 1.0, beta: 0.5, "
                                         f"clip: {2 * CLIP}}}",
                                         "algo.value={hidden: 32, lr: 3.0e-3, "
                                         "steps_per_epoch: 10}"), beta=0.5),
    "SaA-KL-SDE": Arm("digits_score_as_action.yaml",
                      ("policy.sampler=ddim", "policy.eta=1.0", "algo.advantage=leave_one_out",
                       "algo.value=null", "policy.exploration=0.0", "algo.ratio_units=sum",
                       f"algo.loss_kwargs={{clip: {2 * CLIP}, beta: 0.5, gae_lambda: 1.0}}"),
                      beta=0.5),
    # Diffusion-DPO [Wallace+23, Eq. 14] on Bradley–Terry pairs of base samples (compute_dpo_cell)
    "DiffusionDPO": Arm("digits_reinforce.yaml", ("policy.sampler=ddim", "policy.eta=1.0"),
                        beta=0.5, kind="dpo"),
    "Flow-GRPO": Arm("digits_flow_grpo.yaml", (f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.0}}",),
                     family="flow"),
    "DiffusionNFT": Arm("digits_flow_nft.yaml", (), family="flow"),
    # The rest of the Flow-GRPO family and DanceGRPO on the flow testbed base, each with its
    # registered loss and its shipped config's sampler settings (the authors' defaults, cited in
    # the config files), β_KL = 0 and the same per-dimension clip as every PPO-type arm:
    # Flow-GRPO-Fast (yifan123/flow_grpo README): ODE trajectory with SDE branching at 2 random
    # steps, only those trained (``action_steps: branch:2``); MixGRPO (Tencent-Hunyuan/MixGRPO):
    # an SDE window of 4 steps sliding by one every 3 epochs, ODE elsewhere, a group's x_T
    # shared (``slide:4:3:1``, ``init_same_noise``); DanceGRPO (XueZeyue/DanceGRPO): its
    # flux_step SDE (``dance_sde``, η = 0.3), timestep fraction 0.6, a group's x_T shared.
    "Flow-GRPO-Fast": Arm("digits_flow_grpo_fast.yaml",
                          (f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.0}}",), family="flow"),
    "MixGRPO": Arm("digits_flow_mixgrpo.yaml", (f"algo.loss_kwargs={{clip: {CLIP}, beta: 0.0}}",),
                   family="flow"),
    "DanceGRPO": Arm("digits_flow_dance_grpo.yaml", (f"algo.loss_kwargs={{clip: {CLIP}}}",),
                     family="flow"),
}
ONE_MINIBATCH = {"REINFORCE", "DRaFT", "AdjointMatching", "DiffusionDPO"}  # no ratio: one gradient step/epoch
CLAIM_A = ("LOOP", "DDPO", "REINFORCE")
CLAIM_A_PAIRS = (("LOOP", "DDPO"), ("LOOP", "REINFORCE"), ("DDPO", "REINFORCE"))
CLAIM_D = ("Flow-GRPO-Fast", "MixGRPO", "DanceGRPO")  # each against Flow-GRPO
CLAIM_C = ("DPOK", "SaA-KL", "DPOK-sum", "SaA-KL-SDE", "AdjointMatching", "DiffusionDPO")
# Diffusion-DPO: pairs (x¹, x²) of base samples labelled by Bradley–Terry on r/τ,
# P(x¹ ≻ x²) = σ((r(x¹) − r(x²))/τ); DPO's optimum is p_ref e^{r/(τ β_DPO)} [Rafailov+23, Eq. 4
# with the BT reward r/τ], so τ β_DPO = β makes it p*_β. The log-ratio surrogate is the ELBO
# difference: likelihood weighting g²‖s − ∇log p(x_t|x_0)‖², summed over dimensions, scale
# T/2 [Song+21b, Thm. 1], so at one (t, ε) it is an unbiased estimate of ELBO_θ − ELBO_ref.
DPO_TAU = 1.0
# the flow family's reference sampler: the flow SDE at noise level 0.7 (Flow-GRPO's a = 0.7),
# the same for every flow arm whatever its training sampler (DanceGRPO trains with dance_sde η 0.3)
FLOW_REF_ETA = 0.7
DPO_STEPS_PER_EPOCH = 9  # 9 steps × 16 pairs × 2 images = 288 = the PPO arms' 32 rows × 9 evals


@dataclass(frozen=True)
class Mode:
    """Sizes of one run of the experiment."""

    name: str
    arms: tuple[str, ...]
    epochs: int
    p: int
    k: int
    steps: int
    eval_every: int
    eval_n: int
    ref_steps: int
    seeds: int
    tuning_seeds: int
    grid: tuple[float, ...]
    max_widen: int
    saa_steps: tuple[int, ...]
    conv_arms: tuple[str, ...] = ()  # claim (c) at conv_factor × the budget ("converge" stage)
    conv_factor: int = 4
    conv_seeds: int = 10
    hidden: int = 64
    extra: dict = field(default_factory=dict)


FULL = Mode("full", tuple(ARMS), epochs=40, p=4, k=8, steps=10, eval_every=4, eval_n=256,
            ref_steps=50, seeds=20, tuning_seeds=2, grid=(1e-3, 3e-3, 1e-2), max_widen=6,
            saa_steps=(10, 20, 50),
            conv_arms=("DPOK-sum", "SaA-KL-SDE", "AdjointMatching", "DiffusionDPO"), conv_factor=4,
            conv_seeds=10)
QUICK = Mode("quick", ("REINFORCE", "DDPO", "LOOP", "SaA", "AdjointMatching", "DiffusionDPO"),
             epochs=3, p=2, k=4, steps=4, eval_every=3, eval_n=48, ref_steps=8, seeds=2,
             tuning_seeds=1, grid=(1e-3, 1e-2), max_widen=1, saa_steps=(4, 8),
             conv_arms=("AdjointMatching", "DiffusionDPO"), conv_factor=2, conv_seeds=2,
             hidden=16)


def conv_mode(mode: Mode) -> Mode:
    """The long-budget mode of the "converge" stage: conv_factor × the epochs, the same number
    of evaluations (every conv_factor × eval_every epochs)."""
    return replace(mode, epochs=mode.epochs * mode.conv_factor,
                   eval_every=mode.eval_every * mode.conv_factor)


# ----------------------------------------------------------------------------------------------
# one cell
# ----------------------------------------------------------------------------------------------


def build(arm: str, mode: Mode, lr: float, seed: int, solver: str | None = None,
          steps: int | None = None):
    """The FinetuneConfig of one cell (``solver``/``steps``: claim (b)'s Score as Action)."""
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig

    a = ARMS[arm]
    b = mode.p * mode.k
    mb = b if arm in ONE_MINIBATCH else b // 2
    sets = ["base.type=testbed", *(f"base.{k}={v}" for k, v in PROBLEM.items()),
            f"base.seed={seed}", f"base.control_hidden={mode.hidden}", "policy.guidance=1.0",
            f"policy.steps={steps or mode.steps}", f"prompts.per_epoch={mode.p}",
            f"prompts.k={mode.k}", f"train.epochs={mode.epochs}", f"train.seed={seed}",
            "train.inner_epochs=1", f"train.minibatch_size={mb}",
            f"train.sample_batch_size={b}", f"train.lr={lr}", "train.log_kl=true",
            f"train.ckpt_every={10**6}", "device=cpu", *a.overrides()]
    if solver is not None:
        sets += SAA_SOLVERS[solver]
    return load_config(CONFIGS / a.config, FinetuneConfig, sets)


class Evaluator:
    """Fixed draws (row seeds ``draws``…``draws + n − 1``); one fine reference sampler per
    family."""

    def __init__(self, ft, mode: Mode, draws: int):
        import torch

        self.ft, self.mode = ft, mode
        self.seeds = torch.arange(mode.eval_n) + draws
        s, pc = ft.setup, ft.cfg.policy
        ref = (dict(sampler="ddpm", eta=1.0) if s.kind == "eps" else
               dict(sampler="flow_sde", eta=FLOW_REF_ETA))
        self.ref_cfg = replace(pc, steps=mode.ref_steps, exploration=0.0, action_steps="all",
                               **ref)
        self.train_cfg = replace(pc, exploration=0.0)

    def _policy(self, model, pcfg):
        from scorealign.policy.policy import Policy

        s = self.ft.setup
        return Policy(model, s.sde, pcfg, kind=s.kind, shape=s.shape, encode=s.encode)

    def __call__(self, final: bool = False, steps_grid: tuple[int, ...] = ()) -> dict:
        """Reference-sampler E[r], gold, path KL and distance (and, at the end, the score error
        and the training sampler's E[r] at ``steps_grid``)."""
        import torch

        from scorealign.testbed import sample_distance, score_error

        s, problem = self.ft.setup, self.ft.setup.problem
        model = self.ft.acc.unwrap_model(self.ft.model)
        out = {}
        with torch.no_grad():
            pol, ref = self._policy(model, self.ref_cfg), self._policy(s.ref, self.ref_cfg)
            traj = pol.rollout(s.prompts[:1], len(self.seeds), seeds=self.seeds)
            x = traj.x0.double()
            out["reward"] = float(problem.reward(x).mean())
            out["gold"] = float(problem.log_prob(x).mean())
            out["kl"] = float(pol.kl(ref, traj).double().sum(1).mean())
            out["distance"] = sample_distance(x, problem.target, torch.Generator().manual_seed(
                int(self.seeds[0]) + 7))
            if final:
                out["score_error_g2"] = score_error(
                    lambda x_, t_: model(x_, t_).double(), s.kind, problem.target, s.sde,
                    torch.Generator().manual_seed(int(self.seeds[0]) + 8), n=256, n_t=16,
                    weight="g2")
            for st in steps_grid:  # the training sampler (no exploration) at other step counts
                p2 = self._policy(model, replace(self.train_cfg, steps=st))
                x2 = p2.rollout(s.prompts[:1], len(self.seeds), seeds=self.seeds).x0.double()
                out[f"train_sampler/{st}/reward"] = float(problem.reward(x2).mean())
                out[f"train_sampler/{st}/distance"] = sample_distance(
                    x2, problem.target, torch.Generator().manual_seed(int(self.seeds[0]) + 7))
        return out


def compute_cell(arm: str, mode: Mode, lr: float, seed: int, draws: int,
                 solver: str | None = None, steps: int | None = None,
                 steps_grid: tuple[int, ...] = ()) -> dict:
    """Train one cell and evaluate it every ``eval_every`` epochs (epoch 0 included)."""
    import torch

    torch.set_num_threads(1)
    from scorealign.rl.trainer import Finetuner

    ft = Finetuner(build(arm, mode, lr, seed, solver, steps), None)
    ev = Evaluator(ft, mode, draws)
    rows = [{"epoch": 0, "queries": 0.0, "grad_evals": 0.0, "train_cpu_s": 0.0, **ev()}]
    cpu, grads, clip = 0.0, 0.0, []
    while ft.epoch < mode.epochs:
        c0 = time.process_time()
        try:
            m = ft.train_epoch()
        except (RuntimeError, ValueError) as e:  # RewardError on NaN samples: a collapsed run
            nan = float("nan")
            rows.append({"epoch": ft.epoch + 1, "queries": (ft.epoch + 1) * mode.p * mode.k,
                         "grad_evals": grads, "train_cpu_s": round(cpu, 3), "reward": nan,
                         "gold": nan, "kl": nan, "distance": nan, "score_error_g2": nan,
                         **{f"train_sampler/{st}/{k}": nan for st in steps_grid
                            for k in ("reward", "distance")},
                         "error": f"{type(e).__name__}: {e}"[:300]})
            break
        ft.epoch += 1
        cpu += time.process_time() - c0
        grads += m.get("cost/model_evals_grad", 0.0)
        if "clip/frac_later" in m:
            clip.append(m["clip/frac_later"])
        if ft.epoch % mode.eval_every == 0 or ft.epoch == mode.epochs:
            last = ft.epoch == mode.epochs
            rows.append({"epoch": ft.epoch, "queries": m["queries/reward"], "grad_evals": grads,
                         "train_cpu_s": round(cpu, 3), "train_reward": m["reward/mean"],
                         **ev(final=last, steps_grid=steps_grid if last else ())})
    return {"arm": arm, "lr": lr, "seed": seed, "draws": draws, "solver": solver,
            "steps": steps or mode.steps, "rows": rows,
            "clip_frac_later": float(np.mean(clip)) if clip else float("nan")}


def compute_dpo_cell(arm: str, mode: Mode, lr: float, seed: int, draws: int) -> dict:
    """Diffusion-DPO on the testbed at the same reward-query budget as the RL arms.

    Each epoch draws P·K/2 pairs of base samples with the training sampler (the base model's
    DDIM η = 1 chain at ``mode.steps``; row seeds ``derive_seed(seed, "dpo-pairs", epoch, i)``),
    queries r on both images (P·K queries per epoch, as the RL arms) and labels the pair by
    Bradley–Terry on r/τ. It then takes ``DPO_STEPS_PER_EPOCH`` AdamW steps on minibatches of
    P·K/2 pairs drawn from all pairs so far, with one (t, ε) per pair shared by both images
    (``preference.diffusion_logratio``, sigmoid link, β_DPO = β/τ):

        L = −log σ(β_DPO [Δ_w − Δ_l]),  Δ = −(T/2) (err_θ − err_ref),
        err = g(t)² ‖s(x_t, t) − ∇log p(x_t|x_0)‖² (summed)     [Wallace+23, Eq. 14; Song+21b]

    Gradient model evaluations: 2 per pair per step (the reference's are without gradient).
    """
    import torch

    torch.set_num_threads(1)
    from scorealign.preference.diffusion_logratio import (diffusion_dpo_loss,
                                                          pair_denoising_errors)
    from scorealign.rl.trainer import Finetuner
    from scorealign.rng import derive_seed, generator
    from scorealign.sde.dsm import sample_t

    ft = Finetuner(build(arm, mode, lr, seed), None)
    s, problem = ft.setup, ft.setup.problem
    ev = Evaluator(ft, mode, draws)
    model = ft.acc.unwrap_model(ft.model)
    base_pol = ev._policy(s.ref, ev.train_cfg)
    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    beta_dpo = PROBLEM["beta"] / DPO_TAU
    n_pairs = mode.p * mode.k // 2
    xw_all, xl_all = [], []
    rows = [{"epoch": 0, "queries": 0.0, "grad_evals": 0.0, "train_cpu_s": 0.0, **ev()}]
    cpu, grads, queries = 0.0, 0.0, 0
    for epoch in range(mode.epochs):
        c0 = time.process_time()
        seeds = torch.tensor([derive_seed(seed, "dpo-pairs", epoch, i)
                              for i in range(2 * n_pairs)])
        with torch.no_grad():
            x = base_pol.rollout(s.prompts[:1], 2 * n_pairs, seeds=seeds).x0.double()
        r = problem.reward(x)
        queries += len(x)
        g = generator(seed, "dpo-labels", epoch)
        first = torch.rand(n_pairs, generator=g, dtype=torch.float64) < torch.sigmoid(
            (r[:n_pairs] - r[n_pairs:]) / DPO_TAU)
        a, b = x[:n_pairs], x[n_pairs:]
        xw_all.append(torch.where(first[:, None], a, b))
        xl_all.append(torch.where(first[:, None], b, a))
        xw, xl = torch.cat(xw_all).float(), torch.cat(xl_all).float()
        model.train()
        for k in range(DPO_STEPS_PER_EPOCH):
            gk = generator(seed, "dpo-step", epoch, k)
            idx = torch.randint(len(xw), (n_pairs,), generator=gk)
            t = sample_t(n_pairs, gk, s.sde)
            noise = torch.randn(n_pairs, xw.shape[1], generator=gk)
            kw = dict(kind=s.kind, weighting="likelihood", reduce="sum")
            ew, el = pair_denoising_errors(model, s.sde, xw[idx], xl[idx], t, noise, **kw)
            with torch.no_grad():
                rw, rl = pair_denoising_errors(s.ref, s.sde, xw[idx], xl[idx], t, noise, **kw)
            out = diffusion_dpo_loss(ew, rw, el, rl, link="sigmoid", beta=beta_dpo,
                                     scale=0.5 * s.sde.T)
            ft.opt.zero_grad()
            out.losses.mean().backward()
            if ft.cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, ft.cfg.train.grad_clip)
            ft.opt.step()
            grads += 2 * n_pairs
        model.eval()
        cpu += time.process_time() - c0
        e = epoch + 1
        if e % mode.eval_every == 0 or e == mode.epochs:
            rows.append({"epoch": e, "queries": float(queries), "grad_evals": grads,
                         "train_cpu_s": round(cpu, 3), "train_reward": float(r.mean()),
                         "train_loss": float(out.losses.detach().mean()),
                         **ev(final=e == mode.epochs)})
    return {"arm": arm, "lr": lr, "seed": seed, "draws": draws, "solver": None,
            "steps": mode.steps, "rows": rows, "clip_frac_later": float("nan")}


def cell_path(root: Path, arm: str, lr: float, seed: int, solver: str | None = None,
              steps: int | None = None) -> Path:
    tag = f"{arm}" + (f"-{solver}{steps}" if solver else "")
    return root / f"{tag}__lr{lr:g}__seed{seed}.json"


def run_cell(root: Path, arm: str, mode: Mode, lr: float, seed: int, draws: int,
             solver: str | None = None, steps: int | None = None,
             steps_grid: tuple[int, ...] = (), new: bool = True) -> dict | None:
    """The cached cell (``_cells.cached``); None if absent and ``new`` is False."""
    path = cell_path(root, arm, lr, seed, solver, steps)
    if not new and not path.is_file():
        return None
    fresh = not path.is_file()
    if ARMS[arm].kind == "dpo":
        cell = cached(path, lambda: compute_dpo_cell(arm, mode, lr, seed, draws), cpu_key="cpu_s")
    else:
        cell = cached(path, lambda: compute_cell(arm, mode, lr, seed, draws, solver, steps,
                                                 steps_grid), cpu_key="cpu_s")
    if fresh:
        print(f"{path.name}: E[r] {cell['rows'][-1]['reward']:.3f}, {cell['cpu_s']:.1f} CPU s",
              flush=True)
    return cell


# ----------------------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------------------


def base_gold(mode: Mode, draws: int) -> float:
    """E[log p*_β] of the base model on the given draws with the reference sampler."""
    from scorealign.rl.trainer import Finetuner

    ft = Finetuner(build("REINFORCE", mode, 1e-3, 0), None)
    return Evaluator(ft, mode, draws)()["gold"]


def tune(job: tuple) -> dict:
    """Tune one arm's lr on the tuning seeds/draws (a worker process); with ``solver``/``steps``
    (claim (b)) the lr of Score as Action trained with that solver and step count."""
    arm, mode, root, split, floor_gold, new, *cfg = job
    solver, steps = cfg if cfg else (None, None)
    name = arm + (f"-{solver}{steps}" if solver else "")

    def score(lr: float) -> dict:
        cells = [run_cell(root, arm, mode, lr, s, split.tuning_draws, solver, steps, new=new)
                 for s in split.tuning_seeds]
        if any(c is None for c in cells):
            raise LookupError(f"{name} lr {lr:g}: tuning cell missing (--no-new-cells)")
        fin = [c["rows"][-1] for c in cells]
        return {"reward": float(np.mean([r["reward"] for r in fin])),
                "gold": float(np.mean([r["gold"] for r in fin]))}

    try:
        t = sel.tune_grid(mode.grid, score, gold_floor=floor_gold, max_widen=mode.max_widen)
    except LookupError as e:
        return {"arm": name, "error": str(e)}
    return {"arm": name, "tuned": t}


def report_job(job: tuple) -> dict | None:
    root, arm, mode, lr, seed, draws, solver, steps, steps_grid, new = job
    return run_cell(root, arm, mode, lr, seed, draws, solver, steps, steps_grid, new)


# ----------------------------------------------------------------------------------------------
# analysis
# ----------------------------------------------------------------------------------------------


def first_reach(qs: list[float], rs: list[float], target: float) -> float:
    """Queries at which the curve first reaches ``target`` (linear interpolation; inf if never)."""
    if rs[0] >= target:
        return qs[0]
    for i in range(1, len(rs)):
        if rs[i] >= target:
            return qs[i - 1] + (qs[i] - qs[i - 1]) * (target - rs[i - 1]) / (rs[i] - rs[i - 1])
    return float("inf")


def interp(xs: list[float], ys: list[float], x: float) -> float:
    """ys at the first crossing of x by xs (piecewise linear; NaN if never crossed)."""
    for i in range(1, len(xs)):
        lo, hi = xs[i - 1], xs[i]
        if (lo - x) * (hi - x) <= 0 and hi != lo:
            return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - lo) / (hi - lo)
    return float("nan")


def make_problem(name: str, d: int, beta: float):
    """The testbed problem (``scorealign.testbed.make_problem``)."""
    from scorealign.testbed import make_problem as mk

    return mk(name, d, beta)


def r_star(problem, kl: float) -> float:
    """R*(κ), saturated at the frontier's end: beyond the KL of β = ``BETA_RANGE[0]`` the best
    reward is that end's (the frontier is flat there up to 1e-4 of β), below 0 it is E_p0[r]."""
    from scorealign.testbed import frontier_reward
    from scorealign.testbed.frontier import BETA_RANGE

    if not math.isfinite(kl):
        return float("nan")
    end = problem.at(BETA_RANGE[0])
    if kl >= end.kl():
        return end.expected_reward()
    return frontier_reward(problem, max(kl, 0.0))


def analyse(cells: dict, mode: Mode, constants: dict, conv: dict | None = None,
            onelr: dict | None = None) -> dict:
    """Tables, paired intervals, Holm across claims (cells: (arm, tag) → {seed: cell}; conv:
    arm → {seed: cell} of the long-budget stage; onelr: ("SaA", solver, steps) → {seed: cell}
    of claim (b)'s configurations at the SaA arm's lr)."""
    base_r, opt_r, kappa = constants["base_reward"], constants["optimal_reward"], constants["kappa"]
    r90 = base_r + 0.9 * (opt_r - base_r)
    budget = mode.epochs * mode.p * mode.k
    problem = make_problem(PROBLEM["problem"], PROBLEM["dim"], PROBLEM["beta"])
    out: dict = {"table": {}, "curves": {}, "claims": {}, "r90": r90, "budget_queries": budget}
    seeds_all = sorted({s for v in cells.values() for s in v})
    for arm in mode.arms:
        cs = cells.get((arm, ""), {})
        if not cs:
            continue
        fin = {s: c["rows"][-1] for s, c in cs.items()}
        rew = [f["reward"] for f in fin.values()]
        kls = [f["kl"] for f in fin.values()]
        out["table"][arm] = {
            "seeds": len(cs), "lr": next(iter(cs.values()))["lr"],
            "reward": ci95(rew), "gold": ci95([f["gold"] for f in fin.values()]),
            "kl": ci95(kls),
            "reward_gap": ci95([r_star(problem, k) - r
                                for k, r in zip(kls, rew)]),
            "distance": ci95([f["distance"] for f in fin.values()]),
            "score_error_g2": ci95([f.get("score_error_g2", float("nan"))
                                    for f in fin.values()]),
            "grad_evals": float(np.mean([f["grad_evals"] for f in fin.values()])),
            "train_cpu_s": ci95([f["train_cpu_s"] for f in fin.values()]),
            "queries": float(np.mean([f["queries"] for f in fin.values()])),
            "collapse_rate": sel.collapse_rate(rew, base_r, COLLAPSE_MARGIN),
            "clip_frac_later": ci95([c["clip_frac_later"] for c in cs.values()]),
            "q90": {s: first_reach([r["queries"] for r in c["rows"]],
                                   [r["reward"] for r in c["rows"]], r90) for s, c in cs.items()},
        }
        q = out["table"][arm]["q90"]
        out["table"][arm]["q90_reached"] = sum(math.isfinite(v) for v in q.values())
        out["table"][arm]["kl_at_q90"] = ci95([
            interp([r["queries"] for r in c["rows"]], [r["kl"] for r in c["rows"]], q[s])
            if math.isfinite(q[s]) and q[s] > 0 else float("nan") for s, c in cs.items()])
        out["table"][arm]["reward_at_kappa"] = ci95([
            interp([r["kl"] for r in c["rows"]], [r["reward"] for r in c["rows"]], kappa)
            for c in cs.values()])
        steps0 = [r["queries"] for r in next(iter(cs.values()))["rows"]]
        out["curves"][arm] = {"queries": steps0, **{
            k: [ci95([c["rows"][i][k] for c in cs.values()]) for i in range(len(steps0))]
            for k in ("reward", "kl", "distance")}}
    pvals, claims = {}, out["claims"]
    # (a) queries to 90 % of the optimal gain; unreached seeds censored at the budget
    # (d) the rest of the Flow-GRPO family and DanceGRPO against Flow-GRPO, on the same axes
    for tag, a_, b_ in [*(("(a)", x, y) for x, y in CLAIM_A_PAIRS),
                        *(("(d)", x, "Flow-GRPO") for x in CLAIM_D)]:
        if a_ in out["table"] and b_ in out["table"]:
            qa, qb = out["table"][a_]["q90"], out["table"][b_]["q90"]
            common = [s for s in seeds_all if s in qa and s in qb]
            xa = [min(qa[s], budget) for s in common]
            xb = [min(qb[s], budget) for s in common]
            name = f"{tag} Q90 {a_} − {b_}"
            claims[name] = {"paired": sel.paired_interval(xa, xb),
                            "welch": sel.welch_interval(xa, xb), "unit": "reward queries"}
            pvals[name] = claims[name]["paired"]["p"]
            # matched KL: E[r] where each run's path KL crosses κ* (pairs that both cross)
            ka = {s: interp([r["kl"] for r in cells[(a_, "")][s]["rows"]],
                            [r["reward"] for r in cells[(a_, "")][s]["rows"]], kappa)
                  for s in common}
            kb = {s: interp([r["kl"] for r in cells[(b_, "")][s]["rows"]],
                            [r["reward"] for r in cells[(b_, "")][s]["rows"]], kappa)
                  for s in common}
            name = f"{tag} E[r] at path KL κ* {a_} − {b_}"
            xa, xb = [ka[s] for s in common], [kb[s] for s in common]
            claims[name] = {"paired": sel.paired_interval(xa, xb),
                            "welch": sel.welch_interval(xa, xb), "unit": "reward"}
            pvals[name] = claims[name]["paired"]["p"]
    # (b) Score as Action's spread over solvers/steps vs DDPO's over evaluation steps: each
    # configuration at its own lr (the claim), and all at the lr chosen at DDIM mode.steps
    # ("one lr", the design before per-configuration selection, kept beside it)
    ddpo = cells.get(("DDPO", ""), {})
    grid = mode.saa_steps
    one = dict(onelr or {})
    if ("SaA", "DDIM", str(mode.steps)) in cells:
        one[("SaA", "DDIM", str(mode.steps))] = cells[("SaA", "DDIM", str(mode.steps))]
    families = [("(b)", "", {k: v for k, v in cells.items() if k[0] == "SaA" and k[1]})]
    if onelr:
        families.append(("(b, one lr)", " (one lr)", one))
    for tag, suffix, saa in families:
        if len(saa) != len(SAA_SOLVERS) * len(grid) or not ddpo:  # all 9 configurations
            continue
        common = [s for s in seeds_all if s in ddpo and all(s in v for v in saa.values())]
        if len(common) >= 2:
            spread_saa = [np.ptp([v[s]["rows"][-1]["reward"] for v in saa.values()])
                          for s in common]
            spread_ddpo = [np.ptp([ddpo[s]["rows"][-1][f"train_sampler/{st}/reward"]
                                   for st in grid]) for s in common]
            name = f"{tag} spread of E[r]: SaA over solvers×steps − DDPO over eval steps"
            claims[name] = {"paired": sel.paired_interval(spread_saa, spread_ddpo),
                            "welch": sel.welch_interval(spread_saa, spread_ddpo),
                            "saa_configs": sorted("-".join(k[1:]) for k in saa),
                            "saa_spread": ci95(spread_saa), "ddpo_spread": ci95(spread_ddpo),
                            "unit": "reward"}
            pvals[name] = claims[name]["paired"]["p"]
        out.setdefault("claim_b_table", {}).update({"-".join(k[1:]) + suffix: {
            "reward": ci95([c["rows"][-1]["reward"] for c in v.values()]),
            "distance": ci95([c["rows"][-1]["distance"] for c in v.values()]),
            "kl": ci95([c["rows"][-1]["kl"] for c in v.values()]), "seeds": len(v),
            "lr": next(iter(v.values()))["lr"]} for k, v in sorted(saa.items())})
    if "claim_b_table" in out:
        out["claim_b_table"].update({f"DDPO-eval{st}": {
            "reward": ci95([c["rows"][-1][f"train_sampler/{st}/reward"] for c in ddpo.values()]),
            "distance": ci95([c["rows"][-1][f"train_sampler/{st}/distance"]
                              for c in ddpo.values()]), "seeds": len(ddpo),
            "lr": next(iter(ddpo.values()))["lr"]} for st in grid})
    # (c) KL-regularized arms: distance to p*_β above the reference sampler's floor
    for arm in CLAIM_C:
        cs = cells.get((arm, ""), {})
        if cs:
            d = [c["rows"][-1]["distance"] for c in cs.values()]
            name = f"(c) {arm}: distance to p*_β − floor"
            claims[name] = {"paired": sel.paired_interval(d, [constants["floor"]] * len(d)),
                            "unit": "energy distance"}
            pvals[name] = claims[name]["paired"]["p"]
    # (c) paired comparisons of the distance among the KL-regularized arms (same seeds, draws):
    # the ratio-units fix (DPOK-sum vs DPOK), the memoryless SaA vs DPOK-sum, Diffusion-DPO vs
    # the best-placed PG arm
    for a_, b_ in [("DPOK-sum", "DPOK"), ("SaA-KL-SDE", "DPOK-sum"), ("DiffusionDPO", "SaA-KL-SDE")]:
        ca, cb = cells.get((a_, ""), {}), cells.get((b_, ""), {})
        common = [s for s in seeds_all if s in ca and s in cb]
        if len(common) >= 2:
            xa = [ca[s]["rows"][-1]["distance"] for s in common]
            xb = [cb[s]["rows"][-1]["distance"] for s in common]
            name = f"(c) distance {a_} − {b_}"
            claims[name] = {"paired": sel.paired_interval(xa, xb),
                            "welch": sel.welch_interval(xa, xb), "unit": "energy distance"}
            pvals[name] = claims[name]["paired"]["p"]
    # (c, long budget) distance − floor at conv_factor × the budget, and whether it still falls:
    # the paired change of the distance over the second half of the long run
    out["converge"] = {}
    for arm, cs in (conv or {}).items():
        seeds = sorted(cs)
        rows = [cs[s]["rows"] for s in seeds]
        half = [min(range(len(r)), key=lambda i, r=r: abs(r[i]["queries"] - r[-1]["queries"] / 2))
                for r in rows]
        d_end = [r[-1]["distance"] for r in rows]
        d_half = [r[i]["distance"] for r, i in zip(rows, half)]
        fin = [r[-1] for r in rows]
        q = [x["queries"] for x in rows[0]]
        out["converge"][arm] = {
            "seeds": len(seeds), "lr": cs[seeds[0]]["lr"], "budget_queries": q[-1],
            "reward": ci95([f["reward"] for f in fin]), "kl": ci95([f["kl"] for f in fin]),
            "reward_gap": ci95([r_star(problem, f["kl"]) - f["reward"] for f in fin]),
            "distance": ci95(d_end), "distance_half": ci95(d_half),
            "score_error_g2": ci95([f.get("score_error_g2", float("nan")) for f in fin]),
            "grad_evals": float(np.mean([f["grad_evals"] for f in fin])),
            "train_cpu_s": ci95([f["train_cpu_s"] for f in fin]),
            "curve": {"queries": q, "distance_minus_floor": [
                ci95([r[i]["distance"] - constants["floor"] for r in rows])
                for i in range(len(q))], "reward": [ci95([r[i]["reward"] for r in rows])
                                                    for i in range(len(q))]}}
        name = f"(c, {mode.conv_factor}× budget) {arm}: distance to p*_β − floor"
        claims[name] = {"paired": sel.paired_interval(d_end, [constants["floor"]] * len(d_end)),
                        "unit": "energy distance"}
        pvals[name] = claims[name]["paired"]["p"]
        name = f"(c, {mode.conv_factor}× budget) {arm}: distance change over the second half"
        claims[name] = {"paired": sel.paired_interval(d_end, d_half), "unit": "energy distance"}
        pvals[name] = claims[name]["paired"]["p"]
    out["holm"] = sel.holm(pvals)
    return out


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def fmt(ci, d: int = 3) -> str:
    return fmt_ci(ci, d)


def write_table(res: dict, mode: Mode, path: Path) -> None:
    c = res["constants"]
    t = res["analysis"]["table"]
    chosen = res["selection"]["chosen"]
    lines = [f"# Ground truth ({mode.name} mode): quadratic reward on the 2-D ring, β = "
             f"{PROBLEM['beta']}", "",
             f"E_p0[r] = {c['base_reward']:.3f}; E_p*[r] = {c['optimal_reward']:.3f}; κ* = "
             f"KL(p*_β‖p0) = {c['kappa']:.3f}; 90 % gain target r90 = "
             f"{res['analysis']['r90']:.3f}; reference-sampler floor of the energy distance "
             f"(n = {mode.eval_n}) = {c['floor']:.4f}; budget {res['analysis']['budget_queries']}"
             f" reward queries per run.", "",
             f"Status: {res['status']}", "",
             "Mean ± 95 % t-interval over reported seeds (final epoch, reference sampler).", "",
             "| arm | β | lr (edge?) | seeds | E[r] | E[log p*] | path KL | R*(KL) − E[r] | "
             "energy dist. | collapse | Q90 (reached) | KL at Q90 | E[r] at KL κ* | grad evals | "
             "train CPU s | clipped (later minibatch) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, row in t.items():
        ch = chosen.get(arm, {})
        edge = "edge" if ch.get("edge") else "interior"
        q = [v for v in row["q90"].values() if math.isfinite(v)]
        qs = f"{np.median(q):.0f} ({len(q)}/{row['seeds']})" if q else f"— (0/{row['seeds']})"
        lines.append(
            f"| {arm} | {ARMS[arm].beta:g} | {row['lr']:g} ({edge}) | {row['seeds']} | "
            f"{fmt(row['reward'])} | {fmt(row['gold'])} | {fmt(row['kl'], 2)} | "
            f"{fmt(row['reward_gap'])} | {fmt(row['distance'], 4)} | "
            f"{row['collapse_rate']:.2f} | {qs} | {fmt(row['kl_at_q90'], 2)} | "
            f"{fmt(row['reward_at_kappa'])} | "
            f"{row['grad_evals']:.0f} | {fmt(row['train_cpu_s'], 1)} | "
            f"{fmt(row['clip_frac_later'], 2)} |")
    lines += ["", "## Claims (paired t-interval of the difference; Welch beside; Holm across "
              "all claims of this table)", "",
              *sel.claims_table(res["analysis"]["claims"], res["analysis"]["holm"], ".4g",
                                half=".3g")]
    reg = [arm for arm in t if ARMS[arm].beta > 0]
    if reg:
        lines += ["", f"## (c) KL-regularized arms (β = {PROBLEM['beta']}) against p*_β", "",
                  f"Targets: E_p*[r] = {c['optimal_reward']:.3f}, κ* = {c['kappa']:.3f}, energy "
                  f"distance floor {c['floor']:.4f}. Score error: E_t[g²‖s_θ − ∇log p*_t‖²] "
                  "(½T times it is the path KL(P*‖P_θ)).", "",
                  "| arm | seeds | E[r] | path KL | energy dist. | score error (g²) | "
                  "grad evals | train CPU s |", "|---|---|---|---|---|---|---|---|"]
        for arm in reg:
            row = t[arm]
            lines.append(f"| {arm} | {row['seeds']} | {fmt(row['reward'])} | "
                         f"{fmt(row['kl'], 2)} | {fmt(row['distance'], 4)} | "
                         f"{fmt(row['score_error_g2'], 2)} | {row['grad_evals']:.0f} | "
                         f"{fmt(row['train_cpu_s'], 1)} |")
    if res["analysis"].get("converge"):
        f = c["floor"]
        lines += ["", f"## (c) at {mode.conv_factor}× the budget: the KL-regularized arms until "
                  "the distance flattens", "",
                  f"The lr chosen at 1× the budget; {mode.conv_factor}× the epochs; mean ± 95 % "
                  "t-interval over the reported seeds. Distance − floor at half and at the full "
                  "long budget (curves: `figures/convergence.png`).", "",
                  "| arm | seeds | lr | reward queries | E[r] | path KL | R*(KL) − E[r] | "
                  "distance − floor (half) | distance − floor (end) | score error (g²) | "
                  "grad evals | train CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for arm, row in res["analysis"]["converge"].items():
            dh = (row["distance_half"][0] - f, row["distance_half"][1])
            de = (row["distance"][0] - f, row["distance"][1])
            lines.append(f"| {arm} | {row['seeds']} | {row['lr']:g} | "
                         f"{row['budget_queries']:.0f} | {fmt(row['reward'])} | "
                         f"{fmt(row['kl'], 2)} | {fmt(row['reward_gap'])} | {fmt(dh, 4)} | "
                         f"{fmt(de, 4)} | {fmt(row['score_error_g2'], 2)} | "
                         f"{row['grad_evals']:.0f} | {fmt(row['train_cpu_s'], 1)} |")
    if "claim_b_table" in res["analysis"]:
        lines += ["", "## (b) Score as Action by training solver × steps (reference sampler) "
                  "and DDPO (trained with DDIM η = 1 at the mode's steps) by evaluation steps", "",
                  "Each Score as Action configuration at the lr chosen for it on the tuning "
                  "seeds and draws (selection table below); rows \"(one lr)\": every "
                  f"configuration at the lr chosen at DDIM-{mode.steps} (the design before "
                  "per-configuration selection); DDPO at its own pick.", "",
                  "| config | lr (edge?) | seeds | E[r] | energy dist. |", "|---|---|---|---|---|"]
        chosen_b = res["selection"].get("claim_b", {})
        for k, row in res["analysis"]["claim_b_table"].items():
            ck = ("SaA" if k.startswith(f"DDIM-{mode.steps}") or k.endswith("(one lr)") else
                  "DDPO" if k.startswith("DDPO") else "SaA-" + k.replace("-", ""))
            ch = chosen_b.get(ck) or chosen.get(ck)
            if ch is None:
                lr = "n/a"
            elif k.endswith("(one lr)"):
                lr = f"{row.get('lr', ch['pick']):g} (DDIM-{mode.steps}'s pick)"
            else:
                lr = f"{row.get('lr', ch['pick']):g} ({'edge' if ch['edge'] else 'interior'})"
            lines.append(f"| {k} | {lr} | {row['seeds']} | {fmt(row['reward'])} | "
                         f"{fmt(row['distance'], 4)} |")
    if c.get("dims"):
        lines += ["", f"## Closed forms of the same reward at d ∈ {{2, 8, 32}} (β = "
                  f"{PROBLEM['beta']}; no arm run at d > 2)", "",
                  "| d | E_p0[r] | E_p*[r] | κ* = KL(p*_β‖p0) | floor (energy dist., n = "
                  f"{mode.eval_n}) |", "|---|---|---|---|---|"]
        for d, row in c["dims"].items():
            lines.append(f"| {d} | {row['base_reward']:.3f} | {row['optimal_reward']:.3f} | "
                         f"{row['kappa']:.3f} | {row['floor']:.4f} |")
    lines += ["", "## Learning-rate selection (tuning seeds and draws, never reported)", "",
              f"Rule: {res['selection']['selection_rule']}.", "",
              "| arm | grid | pick | edge | widened | note |", "|---|---|---|---|---|---|"]
    for arm, ch in {**chosen, **res["selection"].get("claim_b", {})}.items():
        sc = ", ".join(f"{k}: {v['reward']:.3f}" for k, v in
                       sorted(ch["scores"].items(), key=lambda kv: float(kv[0])))
        pick = "none" if ch["pick"] is None else f"{ch['pick']:g}"
        lines.append(f"| {arm} | {sc} | {pick} | {ch['edge']} | {ch['widened']} | "
                     f"{ch['reason']} |")
    path.write_text("\n".join(lines) + "\n")


def write_figures(res: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from scorealign.testbed import frontier

    out.mkdir(parents=True, exist_ok=True)
    c, an = res["constants"], res["analysis"]
    plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plt.cm.tab20.colors[::2] +
                                                 plt.cm.tab20.colors[1::2])
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm, cur in an["curves"].items():
        q = np.array(cur["queries"])
        mu = np.array([x[0] for x in cur["reward"]])
        h = np.nan_to_num(np.array([x[1] for x in cur["reward"]]))
        ls = "--" if ARMS[arm].beta > 0 else "-"
        ax[0].plot(q, mu, ls, label=arm)
        ax[0].fill_between(q, mu - h, mu + h, alpha=0.12)
        d = np.array([x[0] for x in cur["distance"]])
        ax[1].plot(q, d, ls, label=arm)
    ax[0].axhline(c["optimal_reward"], color="k", lw=1, label="E_p*[r]")
    ax[0].axhline(an["r90"], color="k", lw=0.8, ls=":", label="90 % of the optimal gain")
    ax[0].set(xlabel="reward queries", ylabel="E[r] (reference sampler; 95 % CI)",
              title="reward vs reward queries")
    ax[1].axhline(c["floor"], color="k", lw=0.8, ls=":", label="sampler floor")
    ax[1].set(xlabel="reward queries", ylabel="energy distance to p*_β", yscale="log",
              title="distance to p*_β")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reward_vs_queries.png", dpi=100)
    plt.close(fig)

    if an.get("converge"):
        fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        for arm, row in an["converge"].items():
            cur = row["curve"]
            q = np.array(cur["queries"])
            d = np.array([x[0] for x in cur["distance_minus_floor"]])
            h = np.nan_to_num(np.array([x[1] for x in cur["distance_minus_floor"]]))
            ax[0].plot(q, d, label=arm)
            ax[0].fill_between(q, np.maximum(d - h, 1e-4), d + h, alpha=0.15)
            mu = np.array([x[0] for x in cur["reward"]])
            ax[1].plot(q, mu, label=arm)
        ax[0].set(xlabel="reward queries", ylabel="energy distance to p*_β − floor",
                  yscale="log", title="KL-regularized arms at the long budget (95 % CI)")
        ax[1].axhline(c["optimal_reward"], color="k", lw=1, label="E_p*[r]")
        ax[1].set(xlabel="reward queries", ylabel="E[r] (reference sampler)",
                  title="reward at the long budget")
        ax[0].legend(fontsize=7)
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "convergence.png", dpi=100)
        plt.close(fig)

    problem = make_problem(PROBLEM["problem"], PROBLEM["dim"], PROBLEM["beta"])
    fr = frontier(problem, torch.logspace(-2.5, 3, 80))
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.plot(fr.kl.numpy(), fr.reward.numpy(), "k", lw=1, label="exact frontier R*(KL)")
    ax.scatter([c["kappa"]], [c["optimal_reward"]], marker="*", s=150, color="k",
               label=f"p*_β (β = {PROBLEM['beta']})", zorder=3)
    for arm, row in an["table"].items():
        (k, kh), (r, rh) = row["kl"], row["reward"]
        ax.errorbar([k], [r], xerr=[np.nan_to_num(kh)], yerr=[np.nan_to_num(rh)], fmt="o",
                    ms=5, label=arm, capsize=2)
    ax.set_xscale("symlog", linthresh=1e-2)
    ax.set(xlabel="KL to the base (path KL of the reference chain ≥ terminal KL)",
           ylabel="E[r]", title="final points against the exact frontier")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------


def constants(mode: Mode, draws: int) -> dict:
    """Closed forms of the problem and the reference sampler's floor at the evaluation n."""
    import torch

    from scorealign.sde import FlowSDE, VPSDE
    from scorealign.testbed import floor

    problem = make_problem(PROBLEM["problem"], PROBLEM["dim"], PROBLEM["beta"])
    fl = floor(problem.target, VPSDE(), torch.Generator().manual_seed(draws + 7), n=mode.eval_n,
               sampler="ddpm", steps=mode.ref_steps, kind="eps", eta=1.0)
    fl_flow = floor(problem.target, FlowSDE(), torch.Generator().manual_seed(draws + 7),
                    n=mode.eval_n, sampler="flow_sde", steps=mode.ref_steps, kind="v", eta=0.7)
    return {"base_reward": problem.base_reward(), "optimal_reward": problem.expected_reward(),
            "kappa": problem.kl(), "floor": fl, "floor_flow": fl_flow}


def dims_table(mode: Mode, draws: int) -> dict:
    """Closed forms of the same reward at d ∈ DIMS (issue 22: d ∈ {2, 8, 32}) at β: E_p0[r],
    E_p*[r], κ* and the reference sampler's floor at the evaluation n (no arm is run there)."""
    import torch

    from scorealign.sde import VPSDE
    from scorealign.testbed import DIMS, floor

    out = {}
    for d in DIMS:
        problem = make_problem(PROBLEM["problem"], d, PROBLEM["beta"])
        out[d] = {"base_reward": problem.base_reward(),
                  "optimal_reward": problem.expected_reward(), "kappa": problem.kl(),
                  "floor": floor(problem.target, VPSDE(), torch.Generator().manual_seed(draws + 7),
                                 n=mode.eval_n, sampler="ddpm", steps=mode.ref_steps, kind="eps",
                                 eta=1.0)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--quick", action="store_true", help="tiny run (≤ 2 min) for the test")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--seeds", type=int, default=None, help="reported seeds (default: mode's)")
    ap.add_argument("--arms", nargs="+", default=None, help="subset of arms")
    ap.add_argument("--no-claim-b", action="store_true", help="skip claim (b)'s extra cells")
    ap.add_argument("--no-converge", action="store_true",
                    help="skip the long-budget cells of the KL-regularized arms")
    ap.add_argument("--no-new-cells", action="store_true",
                    help="tabulate the cached cells only (missing ones are left out and named)")
    a = ap.parse_args(argv)
    mode = QUICK if a.quick else FULL
    if a.seeds is not None:
        mode = replace(mode, seeds=a.seeds)
    if a.arms:
        unknown = set(a.arms) - set(ARMS)
        if unknown:
            ap.error(f"unknown arms {sorted(unknown)}; known: {list(ARMS)}")
        mode = replace(mode, arms=tuple(x for x in mode.arms if x in a.arms))
    root = a.results / "cells" / mode.name
    split = sel.split(mode.seeds if not a.quick else FULL.seeds, mode.tuning_seeds)
    split = replace(split, reported_seeds=split.reported_seeds[:mode.seeds])
    new = not a.no_new_cells
    t0 = time.process_time()
    const = constants(mode, split.reported_draws)
    const["dims"] = dims_table(mode, split.reported_draws)
    floor_gold = base_gold(mode, split.tuning_draws)
    # 1. tuning (per arm, and per claim (b) Score as Action configuration, in parallel)
    b_cfgs = [] if a.no_claim_b or "SaA" not in mode.arms else [
        (solver, st) for solver in SAA_SOLVERS for st in mode.saa_steps
        if not (solver == "DDIM" and st == mode.steps)]  # DDIM at mode.steps: the SaA arm
    tuned = map_jobs(tune, [(arm, mode, root, split, floor_gold, new) for arm in mode.arms] +
                     [("SaA", mode, root, split, floor_gold, new, sv, st) for sv, st in b_cfgs],
                     a.jobs)
    tuned_b = tuned[len(mode.arms):]
    tuned = tuned[:len(mode.arms)]
    chosen = {t["arm"]: t["tuned"] for t in tuned if "tuned" in t and t["tuned"].pick is not None}
    missing = [t["arm"] for t in tuned if "tuned" not in t or t["tuned"].pick is None]
    # claim (b): a finished selection may find no lr that passes the rule (every lr below the
    # base's gold); that configuration is then recorded with pick None and not reported
    tuned_b_all = {t["arm"]: t["tuned"] for t in tuned_b if "tuned" in t}
    chosen_b = {k: t for k, t in tuned_b_all.items() if t.pick is not None}
    missing += [t["arm"] for t in tuned_b if "tuned" not in t]
    # 2. reported runs on the paired seeds (and claim (b)'s Score as Action grid)
    jobs = []
    for s in split.reported_seeds:
        for arm, t in chosen.items():
            grid = mode.saa_steps if arm == "DDPO" and not a.no_claim_b else ()
            jobs.append((root, arm, mode, t.pick, s, split.reported_draws, None, None, grid, new))
        for solver, st in b_cfgs:  # each at the lr chosen for its own configuration
            if f"SaA-{solver}{st}" in chosen_b:
                jobs.append((root, "SaA", mode, chosen_b[f"SaA-{solver}{st}"].pick, s,
                             split.reported_draws, solver, st, (), new))
    # 3. the KL-regularized arms at conv_factor × the budget, at the lr chosen at 1 × budget
    conv_jobs = [] if a.no_converge else [
        (root / "converge", arm, conv_mode(mode), chosen[arm].pick, s, split.reported_draws,
         None, None, (), new)
        for s in split.reported_seeds[:mode.conv_seeds] for arm in mode.conv_arms
        if arm in chosen]
    done = map_jobs(report_job, jobs + conv_jobs, a.jobs)
    cells: dict = {}
    conv: dict = {}
    for j, c in zip(jobs + conv_jobs, done):
        if c is not None and j[0] != root:
            conv.setdefault(j[1], {})[j[4]] = c
        elif c is not None:
            key = (j[1], *(("", ) if j[6] is None else (j[6], str(j[7]))))
            cells.setdefault(key, {})[j[4]] = c
    if ("SaA", "") in cells and not a.no_claim_b:  # the reported SaA cell is DDIM at mode.steps
        cells[("SaA", "DDIM", str(mode.steps))] = cells[("SaA", "")]
    onelr: dict = {}  # claim (b) at the SaA arm's lr (the design before per-configuration lrs)
    if "SaA" in chosen:
        for sv, st in b_cfgs:
            for s in split.reported_seeds:
                c = run_cell(root, "SaA", mode, chosen["SaA"].pick, s, split.reported_draws, sv,
                             st, new=new)
                if c is not None:
                    onelr.setdefault(("SaA", sv, str(st)), {})[s] = c
    an = analyse(cells, mode, const, conv, onelr)
    n_rep = {arm: len(cells.get((arm, ""), {})) for arm in mode.arms}
    n_conv = {arm: len(conv.get(arm, {})) for arm in mode.conv_arms if arm in mode.arms}
    n_b = {f"SaA-{sv}{st}": len(cells.get(("SaA", sv, str(st)), {})) for sv, st in b_cfgs
           if f"SaA-{sv}{st}" in chosen_b}
    no_pick = [k for k, t in tuned_b_all.items() if t.pick is None]
    partial = missing or any(n < mode.seeds for n in [*n_rep.values(), *n_b.values()]) or (
        not a.no_converge and any(n < mode.conv_seeds for n in n_conv.values()))
    status = (("complete" + ("" if not no_pick else " (claim (b) configurations where no lr "
                             "passes the selection rule: " + ", ".join(no_pick) + ")"))
              if not partial else
              "PARTIAL — arms without a finished lr selection: " + (", ".join(missing) or "none")
              + "; reported seeds per arm: " + ", ".join(f"{k} {v}/{mode.seeds}"
                                                         for k, v in n_rep.items())
              + ("" if not n_b else "; claim (b) seeds per configuration: " + ", ".join(
                  f"{k} {v}/{mode.seeds}" for k, v in n_b.items()))
              + ("" if not no_pick else "; claim (b) configurations where no lr passes the "
                 "rule: " + ", ".join(no_pick))
              + ("" if a.no_converge else "; long-budget seeds per arm: " + ", ".join(
                  f"{k} {v}/{mode.conv_seeds}" for k, v in n_conv.items())))
    res = {"mode": asdict(mode), "problem": PROBLEM, "status": status, "constants": const,
           "base_gold_tuning": floor_gold,
           "selection": {**sel.record(chosen, selection=sel.selection_rule(floor_gold) +
                                      " (the base model's E[log p*_β] on the tuning draws)",
                                      collapse=sel.collapse_rule(COLLAPSE_MARGIN), split_=split),
                         # claim (b): Score as Action's lr per (solver, steps), same rule
                         "claim_b": {k: t.as_dict() for k, t in tuned_b_all.items()}},
           "analysis": an, "cpu_s_this_call": round(time.process_time() - t0, 1)}
    res["analysis"]["table"] = {k: {kk: vv for kk, vv in v.items()} for k, v in
                                an["table"].items()}
    out = a.results / ("quick" if a.quick else "")
    write_json(out / "results.json", res)
    write_table(res, mode, out / "table.md")
    write_figures(res, out / "figures")
    print(status)
    return 0



if __name__ == "__main__":
    sys.exit(main())
