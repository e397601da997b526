"""``RUN/final`` exports load with the target library and reproduce the trained model exactly."""

from __future__ import annotations

import pytest
import torch

from scorealign.commands.formats import export_digits, export_lm, export_sd


def _perturb_lora(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every LoRA B matrix nonzero values (B = 0 at init would make the test vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_digits_lora_run_exports_a_merged_save_pretrained_pair(tmp_path):
    from scorealign.nets import ModelConfig, build_model, load_pretrained
    from scorealign.nets.cond import Cond
    from scorealign.policy.diffusers_sd import add_lora

    model = build_model(ModelConfig(type="unet_cond", cond="label", sample_size=8,
                                    block_out_channels=(16, 32)), seed=0).eval()
    add_lora(model.unet, 4, 8.0, ["to_q", "to_k", "to_v", "to_out.0"])
    _perturb_lora(model)
    out = export_digits(model, tmp_path / "final")
    # the marker says this directory is scorealign's own export (a rerun may replace it)
    assert sorted(p.name for p in out.iterdir()) == [".scorealign-export", "model.safetensors",
                                                     "model_config.json"]
    loaded = load_pretrained(out)
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    cond = Cond(labels=torch.tensor([1, 2, 3]))
    with torch.no_grad():
        want, got = model(x, t, cond), loaded(x, t, cond)
        base = build_model(model.config, seed=0).eval()(x, t, cond)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - base).abs().max() > 1e-3  # the adapters changed the model


@pytest.fixture(scope="module")
def sd_pipe():
    from scorealign.policy.sd import build_tiny_sd_pipeline
    return build_tiny_sd_pipeline


def _unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = unet.config
    x = torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=g)
    emb = torch.randn(2, 32, c.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10.0, 500.0]), encoder_hidden_states=emb).sample


def test_sd_lora_export_is_diffusers_lora_that_load_lora_weights_reproduces(tmp_path, sd_pipe):
    from scorealign.policy.diffusers_sd import add_lora

    trained = sd_pipe(0)
    add_lora(trained.unet, 4, 8.0, ["to_q", "to_k", "to_v", "to_out.0"])  # alpha != rank
    _perturb_lora(trained.unet)
    out = export_sd(trained.unet, None, tmp_path / "final", lora=True)
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    base = sd_pipe(0)
    before = _unet_out(base.unet)
    base.load_lora_weights(str(out))
    torch.testing.assert_close(_unet_out(base.unet), _unet_out(trained.unet), rtol=0, atol=1e-6)
    assert (before - _unet_out(base.unet)).abs().max() > 1e-3


def test_sd_full_finetune_export_is_a_diffusers_pipeline_dir(tmp_path, sd_pipe):
    from diffusers import StableDiffusionPipeline

    trained = sd_pipe(0)
    with torch.no_grad():
        for p in trained.unet.parameters():
            p.add_(0.01)
    out = export_sd(trained.unet, sd_pipe(0), tmp_path / "final", lora=False)
    pipe = StableDiffusionPipeline.from_pretrained(str(out), local_files_only=True,
                                                   safety_checker=None)
    # bit-exact: the same UNet class and attention processors reloaded with the same fp32 weights
    # (safetensors round-trips them exactly) on the same input
    torch.testing.assert_close(_unet_out(pipe.unet), _unet_out(trained.unet), rtol=0, atol=0)


def _tiny_lm():
    from scorealign.preference.tiny import char_tokenizer, tiny_gpt2
    tok = char_tokenizer("abcdefgh ")
    model = tiny_gpt2(len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=32, seed=0,
                      pad_id=tok.pad_token_id, eos_id=tok.eos_token_id).eval()
    return tok, model


def test_lm_export_loads_with_auto_model_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = _tiny_lm()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    out = export_lm(model, tok, tmp_path / "final")
    m2 = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True).eval()
    t2 = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    ids = t2("abc", return_tensors="pt").input_ids
    assert ids.tolist() == tok("abc", return_tensors="pt").input_ids.tolist()
    # bit-exact: the same class and attention implementation with the same fp32 weights
    assert type(m2) is type(model)
    assert m2.config._attn_implementation == model.config._attn_implementation
    with torch.no_grad():
        torch.testing.assert_close(m2(ids).logits, model(ids).logits, rtol=0, atol=0)
        gen = m2.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=t2.pad_token_id)
    assert gen.shape == (1, ids.shape[1] + 3)


def test_lm_lora_export_is_a_peft_adapter_dir(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    tok, model = _tiny_lm()
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                          fan_in_fan_out=True, task_type="CAUSAL_LM"))
    _perturb_lora(pm)
    out = export_lm(pm, tok, tmp_path / "final")
    assert (out / "adapter_config.json").is_file() and (out / "config.json").is_file()
    _, base = _tiny_lm()
    loaded = PeftModel.from_pretrained(base, str(out)).eval()
    ids = tok("abc", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, pm(ids).logits, rtol=0, atol=1e-6)
