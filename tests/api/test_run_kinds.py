"""``sample``, ``eval``, ``export`` and ``scorealign.load`` on a run of every command (tiny runs):
each run ends with ``final/`` in its ecosystem's format, which reproduces the trained model."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import scorealign
from scorealign.cli.app import app
from scorealign.nets import ModelConfig, build_model, save_pretrained

runner = CliRunner()
TINY = ModelConfig(type="unet_cond", cond="label", kind="eps", sample_size=8,
                   block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=8,
                   label_dim=16)
FT_SETS = ["policy.steps=3", "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
           "train.sample_batch_size=4", "train.epochs=2", "train.ckpt_every=1", "device=cpu",
           "lora.rank=2", "train.lr=3e-2"]


def _invoke(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_pretrained(build_model(TINY, seed=0), tmp_path_factory.mktemp("b") / "model")


@pytest.fixture(scope="module")
def finetune_run(tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    sets = [x for s in FT_SETS + [f"base.path={tiny_base}"] for x in ("--set", s)]
    _invoke("finetune", "--config", "digits_loop", "--out", out, *sets)
    return out


def test_finetune_final_is_the_merged_trained_model(finetune_run):
    from scorealign.commands.kind_finetune import finetune_setup
    from scorealign.nets import load_pretrained
    from scorealign.nets.cond import Cond

    for f in ("config.yaml", "metrics.jsonl", "report.html", "final/model.safetensors"):
        assert (finetune_run / f).is_file(), f
    _, setup = finetune_setup(finetune_run)          # LoRA adapters on the base, from the ckpt
    final = load_pretrained(finetune_run / "final")  # plain model, adapters merged
    x, t, c = torch.randn(4, 1, 8, 8), torch.rand(4), Cond(labels=torch.arange(4))
    with torch.no_grad():
        torch.testing.assert_close(final(x, t, c), setup.model(x, t, c), rtol=1e-5, atol=1e-5)
        assert (final(x, t, c) - setup.ref(x, t, c)).abs().max() > 1e-4  # it did train
    loaded = scorealign.load(finetune_run)
    assert loaded.kind == "finetune" and loaded.sample("a handwritten 3", n=2).shape == (2, 1, 8, 8)


def test_finetune_sample_names_carry_the_prompt_and_eval_compares_with_base(finetune_run):
    _invoke("sample", finetune_run, "--prompt", "a handwritten 7", "--n", "2")
    _invoke("sample", finetune_run, "--prompt", "a handwritten 1", "--n", "2")
    names = sorted(p.name for p in (finetune_run / "samples").glob("sample_*"))
    assert any("a_handwritten_7" in n for n in names) and any("a_handwritten_1" in n
                                                               for n in names)
    _invoke("eval", finetune_run, "--n", "10", "--steps", "2")
    ev = json.loads((finetune_run / "eval.json").read_text())
    for k in ("reward/mean", "reward/gold_mean", "eval/accuracy", "eval/fd"):
        assert k in ev and f"base/{k}" in ev, k
    assert ev["reward/mean"] != ev["base/reward/mean"]


def test_export_from_an_earlier_checkpoint(finetune_run, tmp_path):
    from scorealign.nets import load_pretrained
    from scorealign.nets.cond import Cond

    _invoke("export", finetune_run, "--to", tmp_path / "e1", "--checkpoint", "step_000001")
    _invoke("export", finetune_run, "--to", tmp_path / "e2")
    a, b = load_pretrained(tmp_path / "e1"), load_pretrained(tmp_path / "e2")
    final = load_pretrained(finetune_run / "final")
    x, t, c = torch.randn(2, 1, 8, 8), torch.rand(2), Cond(labels=torch.arange(2))
    with torch.no_grad():
        assert torch.equal(b(x, t, c), final(x, t, c))
        assert not torch.equal(a(x, t, c), b(x, t, c))


def test_control_run_samples_evaluates_and_exports(tmp_path):
    out = tmp_path / "ctl"
    _invoke("control", "--config", "ct_pg", "--out", out, "--set", "train.steps=2", "--set",
            "n_paths=8", "--set", "horizon=0.5", "--set", "dt=0.1", "--set", "eval_every=1")
    assert (out / "final" / "policy.safetensors").is_file() and (out / "report.html").is_file()
    _invoke("sample", out, "--n", "3")
    _invoke("eval", out)
    assert "perf/J" in json.loads((out / "eval.json").read_text())


def test_dpo_run_is_a_transformers_dir_and_samples_and_evaluates(tmp_path):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p + ":", "chosen": "ab", "rejected": "ba"}) +
                            "\n" for p in ("a", "b", "ab", "ba") * 4))
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(f"""model: {{source: tiny_gpt2, n_layer: 1, n_embd: 16, n_head: 2,
         n_positions: 32}}
data: {{source: jsonl, path: {data}, max_length: 16, max_prompt_length: 8}}
loss: {{name: sigmoid, params: {{beta: 0.5}}}}
train: {{steps: 4, batch_size: 4, lr: 1.0e-2, log_every: 1, ckpt_every: 2, progress: false}}
device: cpu
""")
    out = tmp_path / "dpo"
    _invoke("dpo", "--config", cfg, "--out", out)
    assert (out / "report.html").is_file()
    m = AutoModelForCausalLM.from_pretrained(str(out / "final"), local_files_only=True)
    loaded = scorealign.load(out)
    ids = loaded.tokenizer("ab:", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(m(ids).logits, loaded.model(ids).logits)
    _invoke("sample", out, "--prompt", "ab:", "--n", "2")
    _invoke("eval", out)
    assert json.loads((out / "eval.json").read_text())["eval/pref_accuracy"] > 0.5
