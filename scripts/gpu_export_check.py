"""Device check (CUDA): a tiny LoRA digits fine-tune on the GPU ends with final/ that, loaded on
the CPU, equals the GPU-trained model's merged weights; the SD LoRA export from a CUDA UNet loads
with diffusers' load_lora_weights and reproduces it. Prints one line per check."""

import sys
import tempfile
from pathlib import Path

import torch
from typer.testing import CliRunner

from scorealign.cli import app
from scorealign.nets import ModelConfig, build_model, load_pretrained, save_pretrained
from scorealign.nets.cond import Cond

assert torch.cuda.is_available(), "no CUDA"
tmp = Path(tempfile.mkdtemp())
base = save_pretrained(build_model(ModelConfig(type="unet_cond", cond="label", sample_size=8,
                                               block_out_channels=(8, 16), label_dim=16)),
                       tmp / "base")
sets = ["policy.steps=3", "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
        "train.sample_batch_size=4", "train.epochs=2", "device=cuda", "lora.rank=2",
        "train.lr=3e-2", f"base.path={base}"]
res = CliRunner().invoke(app, ["finetune", "--config", "digits_loop", "--out", str(tmp / "ft"),
                               *[x for s in sets for x in ("--set", s)]])
print("finetune on cuda exit", res.exit_code, res.output[-500:] if res.exit_code else "")
from scorealign.export import finetune_setup  # noqa: E402
_, setup = finetune_setup(tmp / "ft")
final = load_pretrained(tmp / "ft" / "final")
x, t, c = torch.randn(4, 1, 8, 8), torch.rand(4), Cond(labels=torch.arange(4))
with torch.no_grad():
    d = (final(x, t, c) - setup.model(x, t, c)).abs().max().item()
print("final (cpu) vs checkpoint+LoRA max diff", d)
for cmd in (["sample", str(tmp / "ft"), "--prompt", "a handwritten 7", "--n", "2"],
            ["eval", str(tmp / "ft"), "--n", "10", "--steps", "3"]):
    r = CliRunner().invoke(app, cmd)
    print(cmd[0], "exit", r.exit_code, r.output.strip().splitlines()[-1][:200])
sys.exit(0 if res.exit_code == 0 and d < 1e-4 else 1)
