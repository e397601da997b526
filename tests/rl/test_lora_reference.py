"""The KL reference under LoRA is the trained network with its adapters off (no copy of the base).

``rl.setup.AdaptersOff`` must compute exactly what a frozen copy of the base taken before the
adapters were added computes (same modules, same shapes, same inputs: bit-exact), leave the
adapters' state (on, ``requires_grad``, train mode, gradient checkpointing) as it found it, and
give the same training run as a copied reference.
"""

from __future__ import annotations

import copy

import pytest
import torch

from scorealign.nets import ModelConfig, build_model, save_pretrained
from scorealign.rl.setup import AdaptersOff, adapters_off, build_setup, frozen_reference
from scorealign.rl.trainer import Finetuner
from scorealign.train.bases import load_digits_base


def _perturb_lora(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-zero LoRA B (A and B random): the adapted model differs from its base."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def _sd_parts():
    from scorealign.policy.diffusers_sd import SDParts, add_lora
    from scorealign.policy.sd import build_tiny_sd_pipeline

    parts = SDParts(build_tiny_sd_pipeline(0, size="tiny"), cache_prompts=True)
    base = copy.deepcopy(parts.model).requires_grad_(False).eval()  # the old reference
    add_lora(parts.pipe.unet, 4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"])
    _perturb_lora(parts.model)
    return parts, base


def _inputs(parts, b: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, *parts.shape, generator=g)
    t = torch.rand(b, generator=g) * 0.9 + 0.05
    return x, t, parts.encode(["a cat", "a dog", "a tree"][:b])


def test_sd_reference_is_the_base_bit_for_bit_and_leaves_the_adapters_on():
    parts, base = _sd_parts()
    model = parts.model
    ref = frozen_reference(model, lora=True)
    assert isinstance(ref, AdaptersOff) and list(ref.parameters()) == []
    x, t, cond = _inputs(parts)
    model.train()  # the trainer's update mode: the reference still runs in eval mode
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    with torch.no_grad():
        adapted = model(x, t, cond)
        r = ref(x, t, cond)
        assert torch.equal(r, base(x, t, cond))
        assert not torch.equal(adapted, r)  # the adapters do change the model
        assert torch.equal(model(x, t, cond), adapted)  # switched back on
    assert all(m.training for m in model.modules())
    assert lora and all(p.requires_grad for p in lora)
    ref.to("cpu").requires_grad_(False).eval()  # what the trainer does to a reference
    assert all(p.requires_grad for p in lora) and model.training


def test_sd_reference_log_prob_and_kl_equal_the_base_copys():
    from scorealign.policy.policy import Policy
    from scorealign.rl.config import FinetuneConfig
    from scorealign.config import load_config

    parts, base = _sd_parts()
    cfg = load_config(None, FinetuneConfig, ["policy.steps=4", "policy.eta=1.0",
                                             "policy.guidance=3.0", "base.type=sd_tiny"])

    def pol(m):
        return Policy(m, parts.sde, cfg.policy, kind="eps", shape=parts.shape,
                      encode=parts.encode)
    theta, ref, copied = pol(parts.model), pol(AdaptersOff(parts.model)), pol(base)
    traj = theta.rollout(["a cat", "a dog"], 2, seeds=torch.arange(4))
    with torch.no_grad():
        assert torch.equal(ref.log_prob(traj), copied.log_prob(traj))
        kl = theta.kl(ref, traj)
        assert torch.equal(kl, theta.kl(copied, traj)) and kl.abs().sum() > 0


def test_reference_vjp_under_gradient_checkpointing_is_the_bases():
    """A VJP through the reference (Adjoint Matching's lean adjoint) is taken after the forward
    returns; a checkpointed block recomputed then must not see the adapters switched back on."""
    parts, base = _sd_parts()
    parts.pipe.unet.enable_gradient_checkpointing()
    base.unet.enable_gradient_checkpointing()
    parts.model.train()
    base.train()  # checkpointing is active in both; only the adapters differ
    x, t, cond = _inputs(parts)
    ref = AdaptersOff(parts.model)
    grads = []
    for m in (ref, base):
        xr = x.clone().requires_grad_()
        out = m(xr, t, cond)
        grads.append((out.detach(), torch.autograd.grad(out.square().sum(), xr)[0]))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-7)
    assert parts.pipe.unet.is_gradient_checkpointing  # restored


def test_merged_adapters_are_refused():
    parts, _ = _sd_parts()
    for m in parts.model.modules():
        if hasattr(m, "merge") and hasattr(m, "lora_A"):
            m.merge()
    x, t, cond = _inputs(parts)
    with pytest.raises(ValueError, match="merged"):
        with adapters_off(parts.model):
            pass


def _digits_dir(tmp_path):
    cfg_m = ModelConfig(type="unet_cond", cond="label", sample_size=8, block_out_channels=(16, 32))
    save_pretrained(build_model(cfg_m, seed=0), tmp_path / "base")
    return tmp_path / "base"


SETS = ["lora.rank=2", "lora.target_modules=[to_q, to_k, to_v]", "train.epochs=2",
        "train.lr=3e-2", "algo.loss=grpo", "algo.loss_kwargs={clip: 0.05, beta: 0.5}",
        "train.log_kl=true", "train.minibatch_size=4", "train.sample_batch_size=4"]


@pytest.mark.parametrize("mode", ["lean", "fast"])
def test_training_with_the_adapters_off_reference_equals_a_copied_reference(tmp_path, make_config,
                                                                            mode):
    """Two epochs of GRPO with a differentiable KL (β = 0.5) and the logged KL: the run with the
    default reference (adapters off) and the run with a frozen copy of the base end with the same
    weights, bit for bit, and log the same KL."""
    d = _digits_dir(tmp_path)
    cfg = make_config(f"base.path={d}", f"train.mode={mode}", *SETS)
    runs = []
    for copied in (False, True):
        setup = build_setup(cfg)
        assert isinstance(setup.ref, AdaptersOff)
        if copied:
            _, base = load_digits_base(str(d))
            setup.ref = base.requires_grad_(False).eval()
        ft = Finetuner(cfg, None, setup=setup)
        kls = []
        for _ in range(2):
            m = ft.train_epoch()
            ft.epoch += 1
            kls.append(m["kl/base"])
        runs.append((setup.trainable_state(), kls))
    (a, kl_a), (b, kl_b) = runs
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert kl_a == kl_b and kl_a[-1] != 0


def test_a_compiled_network_is_bypassed_by_the_reference_and_restored():
    """The reference runs the eager UNet (with its adapters off), never the compiled one, whose
    guards would have to notice the switched flags; the compiled one is back afterwards."""
    parts, base = _sd_parts()

    class Compiled(torch.nn.Module):  # stands in for torch.compile(unet): must not be called
        def forward(self, *a, **k):
            raise AssertionError("the reference called the compiled network")

    compiled = Compiled()
    object.__setattr__(parts.model, "compiled", compiled)
    x, t, cond = _inputs(parts)
    with torch.no_grad():
        assert torch.equal(AdaptersOff(parts.model)(x, t, cond), base(x, t, cond))
    assert parts.model.compiled is compiled
    with pytest.raises(AssertionError, match="compiled network"):
        parts.model(x, t, cond)
