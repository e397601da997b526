"""LoRA adapters of a Diffusion-DPO run are drawn from the run's seed, not from torch's global
generator: the same config gives the same adapters whatever ran before it in the process (a test
order dependence in tests/rpo/test_train_cli.py came from this), and another seed other ones."""

from __future__ import annotations

import torch

from scorealign.config import load_config
from scorealign.preference.diffusion_dpo import build_policy
from scorealign.preference.rpo.config import DiffusionDPOConfig


def _lora_a(cfg, base) -> dict[str, torch.Tensor]:
    policy = build_policy(cfg, base)[0]
    return {k: v.detach().clone() for k, v in policy.state_dict().items() if "lora_A" in k}


def test_lora_init_follows_the_run_seed_not_the_global_generator(tiny_base):
    cfg = load_config("configs/dpo/diffusion_lora.yaml", DiffusionDPOConfig, ["train.seed=3"])
    torch.manual_seed(1)
    a = _lora_a(cfg, tiny_base)
    torch.manual_seed(2)
    b = _lora_a(cfg, tiny_base)
    assert a, "the config enables LoRA"
    for k in a:  # the same seeded draws on the same shapes: equal by construction
        assert torch.equal(a[k], b[k]), k
    other = _lora_a(load_config("configs/dpo/diffusion_lora.yaml", DiffusionDPOConfig,
                                ["train.seed=4"]), tiny_base)
    assert any(not torch.equal(a[k], other[k]) for k in a)
    state = torch.get_rng_state()
    _lora_a(cfg, tiny_base)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left as it was
