"""The authors' defaults and the conventions of issue 13, each tested against the old behaviour:
λ = 0.29, mixing α = 0.25 (mixing with a margin is no longer DPO), α = 1 with mixing an error,
eps reaching the robust/cdpo links inside RainbowPO, TRL-style implicit rewards, the IPO form,
``dispersion_scale: auto``, KTO's z₀ gathered over processes and a KTO batch of one."""

import math
import socket

import pytest
import torch
from typer.testing import CliRunner

from scorealign.preference import components as C
from scorealign.preference import losses as L
from scorealign.preference import mallows as M
from scorealign.preference.data import UnpairedCollator
from scorealign.preference.objectives import allowed_params, resolve

LOGP_W, LOGP_L = [-4.0, -6.5, -3.0], [-5.0, -6.0, -7.5]
REF_W, REF_L = [-4.5, -6.0, -3.5], [-5.5, -6.5, -6.0]
LEN_W, LEN_L = [4.0, 6.0, 3.0], [5.0, 3.0, 7.0]
ENT = [0.3, 0.6, 0.9]


def _lp(ref=True, entropy=None):
    t = torch.tensor
    return L.PairLogps(t(LOGP_W), t(LOGP_L), t(LEN_W), t(LEN_L),
                       t(REF_W) if ref else None, t(REF_L) if ref else None,
                       t(entropy) if entropy is not None else None)


def test_dispersion_scale_defaults_to_the_authors_029():
    # haoxian-chen/MallowsPO mallowsPO_config.py and hanyang1999/RainbowPO dpo_config.py: 0.29.
    for name in ("mallows_theta", "mallows_phi", "rainbowpo"):
        assert allowed_params(name)["dispersion_scale"] == 0.29, name
    c = M.neg_log_dispersion(torch.tensor(ENT))
    torch.testing.assert_close(c, -0.29 * torch.log(torch.tensor(ENT)))
    out = M.mallows_theta_objective(_lp(entropy=ENT), beta=0.5)
    h = (torch.tensor(LOGP_W) - torch.tensor(REF_W)) - (torch.tensor(LOGP_L) - torch.tensor(REF_L))
    torch.testing.assert_close(out.losses, -torch.nn.functional.logsigmoid(0.5 * c * h))


def test_mixing_with_a_margin_is_not_dpo_and_uses_alpha_025():
    beta, gamma = 0.5, 0.3
    mixed = C.rainbowpo(_lp(), beta=beta, mixing=True, margin=gamma)  # α from the default
    dpo = resolve("sigmoid", {"beta": beta})(_lp())
    assert (mixed.losses - dpo.losses).abs().max() > 1e-3  # α = 1 made these equal exactly
    want = []
    for w, l, rw, rl in zip(LOGP_W, LOGP_L, REF_W, REF_L):
        h = (w - l) - 0.25 * (rw - rl) - 0.75 * gamma
        want.append(math.log1p(math.exp(-beta * h)))
    torch.testing.assert_close(mixed.losses, torch.tensor(want))


def test_mixing_with_alpha_one_and_bad_values_are_errors():
    with pytest.raises(L.ParamError, match="mixing_alpha: mixing with mixing_alpha = 1") as e:
        resolve("rainbowpo", {"mixing": True, "mixing_alpha": 1.0})
    assert e.value.param == "mixing_alpha"
    with pytest.raises(L.ParamError, match="mixing_alpha"):
        C.rainbowpo(_lp(), mixing=True, mixing_alpha=1.0)
    with pytest.raises(L.ParamError, match="mixing_alpha: must be in"):
        resolve("rainbowpo", {"mixing_alpha": 1.5})
    with pytest.raises(L.ParamError, match="eps: link 'sigmoid' takes no eps"):
        resolve("rainbowpo", {"eps": 0.1})
    with pytest.raises(L.ParamError, match="dispersion_scale"):
        resolve("mallows_theta", {"dispersion_scale": "big"})


def test_cli_names_the_field_of_an_invalid_combination(tmp_path):
    from scorealign.cli.app import app

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: {source: demo}\nloss:\n  name: rainbowpo\n"
                   "  params: {mixing: true, mixing_alpha: 1.0}\n")
    res = CliRunner().invoke(app, ["dpo", "--config", str(cfg), "--out", str(tmp_path / "r"),
                                   "--dry-run"])
    assert res.exit_code == 2, res.output
    assert "loss.params.mixing_alpha" in res.output and "bad.yaml:4" in res.output


@pytest.mark.parametrize("link", ["robust", "cdpo"])
def test_eps_reaches_the_label_noise_links_inside_rainbowpo(link):
    beta, eps = 0.5, 0.2
    rb = C.rainbowpo(_lp(), beta=beta, link=link, eps=eps)
    direct = resolve(link, {"beta": beta, "eps": eps})(_lp())
    # bit-exact: half-integer log-probs make both margin associations exact in fp32
    torch.testing.assert_close(rb.losses, direct.losses, rtol=0, atol=0)
    plain = C.rainbowpo(_lp(), beta=beta, link=link)  # eps unset: the link's ε = 0, i.e. sigmoid
    assert (rb.losses - plain.losses).abs().max() > 1e-3  # eps used to be dropped silently


def test_ipo_is_the_authors_scaled_form():
    # hanyang1999/RainbowPO dpo_trainer.py: (β·logits − ½)²; TRL's (h − 1/(2β))² = this / β².
    h, beta = torch.tensor([-1.0, 0.0, 0.5, 3.0]), 0.2
    torch.testing.assert_close(L.ipo(h, beta=beta), (beta * h - 0.5) ** 2)
    torch.testing.assert_close(L.ipo(h, beta=beta) / beta**2, (h - 1 / (2 * beta)) ** 2)


def test_implicit_rewards_are_beta_log_ratios_as_in_trl():
    beta = 0.5
    lw = torch.tensor(LOGP_W) / torch.tensor(LEN_W)
    rw = torch.tensor(REF_W) / torch.tensor(LEN_W)
    mixed = C.rainbowpo(_lp(), beta=beta, mixing=True, margin=0.3, length_normalization=True)
    torch.testing.assert_close(mixed.reward_w, beta * (lw - rw))  # not β(a − α a_ref)
    mal = M.mallows_theta_objective(_lp(entropy=ENT), beta=beta)
    torch.testing.assert_close(mal.reward_w, beta * (torch.tensor(LOGP_W) - torch.tensor(REF_W)))


def test_auto_dispersion_scale_makes_the_mean_dispersion_one():
    ent = torch.tensor([0.2, 0.5, 0.7, 0.95])
    lam = M.auto_dispersion_scale(ent)
    assert math.isclose(float(M.neg_log_dispersion(ent, scale=lam).mean()), 1.0, rel_tol=1e-9)
    with pytest.raises(ValueError, match="auto"):
        M.mallows_theta_objective(_lp(entropy=ENT), dispersion_scale="auto")
    obj = resolve("mallows_theta", {"dispersion_scale": "auto"})
    assert obj.auto_dispersion and not obj.bind(dispersion_scale=lam).auto_dispersion


def test_trainer_resolves_auto_from_the_reference_cache(pairs_file, tmp_path):
    from safetensors.torch import load_file

    from scorealign.config import load_config
    from scorealign.preference.config import DPOConfig
    from scorealign.preference.trainer import train
    from scorealign.run.rundir import RunDir

    cfg_file = tmp_path / "m.yaml"
    cfg_file.write_text(
        "device: cpu\nmodel: {source: tiny_gpt2, n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32}\n"
        f"data: {{source: jsonl, path: {pairs_file}, max_length: 16, max_prompt_length: 8}}\n"
        "loss: {name: mallows_theta, params: {beta: 0.5, dispersion_scale: auto}}\n"
        "reference: {mode: precompute, batch_size: 8}\n"
        "train: {steps: 1, batch_size: 4, log_every: 1, seed: 0, progress: false}\n")
    cfg = load_config(cfg_file, DPOConfig)
    run = RunDir.create(tmp_path / "run", cfg)
    summary = train(cfg, run)
    cache = load_file(str(run.path / "ref_logps.safetensors"))
    h_bar = 0.5 * (cache["ent_w"] + cache["ent_l"])
    want = 1.0 / float(-torch.log(h_bar.double()).mean())
    assert math.isclose(summary["dispersion_scale"], want, rel_tol=1e-6)


def _gather_worker(rank: int, port: int, rows: list[list[float]], out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=len(rows))

    def gather(t):
        parts = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    mine = torch.tensor(rows[rank])
    out[rank] = float(L.kto_reference_point(mine, torch.zeros_like(mine), gather))
    dist.destroy_process_group()


def test_kto_reference_point_is_gathered_over_two_processes(monkeypatch):
    # Rank 0's rows alone give a negative KL (z₀ = 0); the global mean is positive.
    rows = [[-1.0, -0.5], [2.0, 1.5]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as mgr:
        out = mgr.dict()
        # for the spawned workers only: os.environ.setdefault leaked 1 thread into every later
        # subprocess of the session when the suite ran with OMP_NUM_THREADS unset
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        procs = [ctx.Process(target=_gather_worker, args=(r, port, rows, out)) for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
        got = dict(out)
    assert got[0] == got[1] == pytest.approx(0.5)  # mean of all four rows, on every process
    alone = float(L.kto_reference_point(torch.tensor(rows[0]), torch.zeros(2)))
    assert alone == 0.0  # the per-process value it replaces


def test_kto_batch_of_one_takes_the_next_examples_completion():
    pool = [{"prompt": [5, 6], "completion": [7, 1], "label": [1]},
            {"prompt": [6], "completion": [3, 4, 1], "label": [0]},
            {"prompt": [2, 3], "completion": [8, 1], "label": [1]}]
    col = UnpairedCollator(pad_id=0, pool=pool)
    out = col([pool[2]], [2])
    mismatched = out["input_ids"][1][out["attention_mask"][1].bool()].tolist()
    assert mismatched == pool[2]["prompt"] + pool[0]["completion"]  # not its own completion
    out = col(pool[:2], [0, 1])  # two rows: rolled within the batch, as before
    assert out["input_ids"][2][out["attention_mask"][2].bool()].tolist() == [5, 6, 3, 4, 1]
    with pytest.raises(ValueError, match="at least two examples"):
        UnpairedCollator(pad_id=0, pool=pool[:1])([pool[0]], [0])


def test_diffusion_dpo_beta_defaults_to_the_authors_5000():
    # SalesforceAIResearch/DiffusionDPO train.py (--beta_dpo default) and both launchers: 5000.
    import inspect

    from scorealign.preference.diffusion_logratio import diffusion_dpo_loss
    from scorealign.preference.rpo.config import DiffusionLossConfig

    assert DiffusionLossConfig().beta == 5000.0
    assert inspect.signature(diffusion_dpo_loss).parameters["beta"].default == 5000.0
