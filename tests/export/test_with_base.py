"""``scorealign export RUN --with-base``: a LoRA finetune run of the tiny SD / SD3 / FLUX bases
becomes one diffusers pipeline directory that ``DiffusionPipeline.from_pretrained`` loads alone
and whose denoiser is the trained one (LoRA fused, or kept as adapters); the run records its base
in ``run.json`` and keeps the built-in base's weights in ``RUN/base``, which reloads with the
pipeline class's own ``from_pretrained`` and no extra arguments (SD3 without T5 included). The
README's "Use the result elsewhere" examples then run in a Python that cannot import scorealign.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "finetune"
RUNS = {"sd": ("sd_tiny_ddpo_lora", "StableDiffusionPipeline", "unet"),
        "sd3": ("sd3_tiny_flow_grpo_lora", "StableDiffusion3Pipeline", "transformer"),
        "flux": ("flux_tiny_flow_grpo_lora", "FluxPipeline", "transformer")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_cli, tiny_lora_sets):
    """One LoRA finetune run per family, exported fused and as adapters."""
    root = tmp_path_factory.mktemp("with_base")
    out = {}
    for fam, (name, _, _) in RUNS.items():
        run = root / f"run_{fam}"
        run_cli("finetune", "--config", CONFIGS / f"{name}.yaml", "--out", run,
                sets=(*tiny_lora_sets, "base.latent_size=4"))
        run_cli("export", run, "--to", root / "exports" / fam, "--with-base")
        run_cli("export", run, "--to", root / "adapters" / fam, "--with-base", "--adapter")
        out[fam] = run
    return root, out


def _denoise(cfg, pipe, seed=0):
    """The pipeline's denoiser in the trainer's interface at a fixed (x, t, prompts)."""
    from scorealign.rl.setup import build_setup, pipeline_model

    model = pipeline_model(cfg, pipe)
    setup = build_setup(cfg)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *setup.shape, generator=g)
    t = torch.full((2,), 0.6)
    with torch.no_grad():
        return model(x, t, setup.encode(["a cat", "a red car"]))


@pytest.mark.slow
@pytest.mark.parametrize("fam", list(RUNS))
def test_run_records_its_base_and_keeps_the_builtin_weights(runs, fam):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline

    from scorealign.commands.kind_finetune import finetune_setup
    from scorealign.rl.setup import base_pipeline
    from scorealign.run.rundir import RunDir

    _, out = runs
    run = RunDir(out[fam])
    assert run.kind == "finetune"
    rec = run.base
    assert rec["type"] == f"{fam}_tiny" and rec["source"] == "builtin" and rec["seed"] == 0
    assert rec["saved"] == "base"
    epochs = [r for r in run.read_metrics() if "reward/mean" in r]
    assert epochs and all(r["mem/peak_gb"] > 0 for r in epochs)  # run/memory.py, every epoch
    cls = {"sd": StableDiffusionPipeline, "sd3": StableDiffusion3Pipeline,
           "flux": FluxPipeline}[fam]
    saved = cls.from_pretrained(str(out[fam] / "base"))  # no extra arguments
    cfg, _ = finetune_setup(out[fam], trained=False)
    torch.testing.assert_close(_denoise(cfg, saved), _denoise(cfg, base_pipeline(cfg)),
                               atol=0, rtol=0)
    if fam == "sd3":  # the zero T5 of the saved base: the same prompt embeddings as no T5
        built = base_pipeline(cfg)
        assert built.text_encoder_3 is None and saved.text_encoder_3 is not None
        with torch.no_grad():
            a = saved.encode_prompt("a cat", None, None, do_classifier_free_guidance=False)[0]
            b = built.encode_prompt("a cat", None, None, do_classifier_free_guidance=False)[0]
        t5 = saved.text_encoder_3(torch.tensor([[5, 6, 7]]))[0]
        assert t5.shape[-1] == 64 and not bool(t5.any())  # T5 tokens: exact zeros
        assert torch.equal(a, b)  # CLIP tokens then the (zero) T5 tokens, bit for bit


@pytest.mark.slow
@pytest.mark.parametrize("fam", list(RUNS))
def test_with_base_export_is_the_trained_pipeline(runs, fam):
    from diffusers import DiffusionPipeline

    from scorealign.commands.kind_finetune import finetune_setup, trained_pipeline
    from scorealign.rl.setup import base_pipeline

    root, out = runs
    _, cls_name, attr = RUNS[fam]
    cfg, setup = finetune_setup(out[fam])
    want = _denoise(cfg, trained_pipeline(cfg, out[fam], setup))
    fused = DiffusionPipeline.from_pretrained(str(root / "exports" / fam))
    assert type(fused).__name__ == cls_name
    assert not any("lora" in n for n, _ in getattr(fused, attr).named_parameters())
    torch.testing.assert_close(_denoise(cfg, fused), want, atol=1e-5, rtol=1e-5)
    adapted = DiffusionPipeline.from_pretrained(str(root / "adapters" / fam))
    adapted.load_lora_weights(str(root / "adapters" / fam))
    torch.testing.assert_close(_denoise(cfg, adapted), want, atol=1e-5, rtol=1e-5)
    base = _denoise(cfg, base_pipeline(cfg))
    assert (base - want).abs().max() > 1e-3  # the trained weights are not the base's


def test_adapter_without_with_base_is_a_usage_error(tmp_path):
    from scorealign.cli.app import app
    (tmp_path / "config.yaml").write_text("data: {}\nsde: {}\nmodel: {}\n")
    res = CliRunner().invoke(app, ["export", str(tmp_path), "--to", str(tmp_path / "x"),
                                   "--adapter"])
    assert res.exit_code == 2 and "--adapter goes with --with-base" in res.output


def test_with_base_of_a_kind_without_a_pipeline_is_an_export_error(tmp_path):
    from scorealign.cli.app import app
    from scorealign.run.rundir import RunDir
    RunDir.create(tmp_path / "lm", {"model": {}}, kind="dpo")
    res = CliRunner().invoke(app, ["export", str(tmp_path / "lm"), "--to", str(tmp_path / "x"),
                                   "--with-base"])
    assert res.exit_code == 2 and "kind 'dpo' have no diffusers pipeline" in res.output
    assert not (tmp_path / "x").exists()


def readme_examples() -> dict[str, str]:
    """The README's ``<!-- elsewhere-example: NAME -->`` code blocks."""
    text = (ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- elsewhere-example: (\w+) -->\n```python\n(.*?)```", text,
                           re.S))


ISOLATE = '''
import importlib.util, sys
from pathlib import Path
# the shared venv may hold an editable scorealign: drop its finder and any source root
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "")]
sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "scorealign").exists()]
sys.path_importer_cache.clear()
assert importlib.util.find_spec("scorealign") is None, "scorealign is importable"
'''


@pytest.mark.slow
def test_readme_examples_run_without_scorealign(runs, tmp_path):
    """SD, SD3, FLUX and digits exports load and generate an image in a Python where
    ``scorealign`` cannot be imported (``-I``, editable finder removed), with the README's own
    code; the digits sample also equals scorealign's from the same latents."""
    from scorealign.commands.digits_diffusers import write_digits_pipeline
    from scorealign.samplers.loop import sample
    from scorealign.train.bases import load_base
    from scorealign.train.task import SamplingConfig

    root, _ = runs
    examples = readme_examples()
    assert set(examples) == {"sd", "sd3", "flux", "digits"}
    work = tmp_path / "work"
    (work / "exports").mkdir(parents=True)
    for fam in ("sd", "sd3", "flux"):
        os.symlink(root / "exports" / fam, work / "exports" / fam)
    base = load_base("pretrained:digits8")
    scfg = SamplingConfig(sampler="ddim", steps=10, eta=0.0, guidance=2.0, grid="uniform")
    write_digits_pipeline(base.model, base.task, scfg, work / "exports" / "digits")
    x_T = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    cond = base.task.cond_for(torch.tensor([7]), ["a handwritten digit 7"])
    want = sample(base.task.pred_fn(base.model, cond, 2.0), "eps", base.sde, x_T,
                  sampler="ddim", steps=10, eta=0.0, grid="uniform").x0
    torch.save({"x_T": x_T, "want": want}, work / "digits_ref.pt")
    check = '''
import torch
ref = torch.load("digits_ref.pt")
got = pipe(["a handwritten digit 7"], latents=ref["x_T"], output_type="latent").images
assert (got - ref["want"]).abs().max() < 1e-5, float((got - ref["want"]).abs().max())
'''
    script = ISOLATE + "".join(examples[k] for k in ("sd", "sd3", "flux", "digits")) + check + \
        'assert "scorealign" not in sys.modules\nprint("ok")\n'
    (work / "examples.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-I", "examples.py"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")
    for png in ("sd.png", "sd3.png", "flux.png", "digit.png"):
        assert (work / png).stat().st_size > 0


def test_full_finetune_with_base_is_the_trained_weights(tmp_path):
    """A full fine-tune (no LoRA): the pipeline directory holds the trained UNet as is."""
    from diffusers import DiffusionPipeline

    from scorealign.commands.formats import export_pipeline_with_base
    from scorealign.policy.sd import build_tiny_sd_pipeline

    trained = build_tiny_sd_pipeline(0).unet
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    export_pipeline_with_base(trained, build_tiny_sd_pipeline(0), tmp_path / "p", lora=False)
    got = DiffusionPipeline.from_pretrained(str(tmp_path / "p")).unet.state_dict()
    want = trained.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
