"""The demo tells its story: its config says what it does (LOOP with a KL term; the unstable
no-KL setting kept as a documented variant), the terminal opens with one line (base, method,
rewards, budget) and closes with a before → after table and the paths of final/ and the report,
and the report labels every number's source, says what each metric measures, labels the grid
rows with their prompts and folds the secondary plots away."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from scorealign.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["train.epochs=2", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
         "train.minibatch_size=4", "train.sample_batch_size=4"]


def test_demo_config_is_loop_with_kl_and_the_variant_differs_only_there():
    demo = yaml.safe_load((ROOT / "configs/finetune/demo.yaml").read_text())
    unstable = yaml.safe_load((ROOT / "configs/finetune/demo_unstable.yaml").read_text())
    assert demo["algo"]["loss"] == "loop" and demo["algo"]["loss_kwargs"]["beta"] == 1e-4
    assert "beta" not in unstable["algo"]["loss_kwargs"]
    demo["algo"]["loss_kwargs"].pop("beta")
    assert demo == unstable   # the variant is the demo without its KL term, nothing else
    text = (ROOT / "configs/finetune/demo_unstable.yaml").read_text()
    assert "dip" in text and "gold" in text


def test_demo_terminal_and_report(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out)] + [a for s in QUICK for a in ("--set", s)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = res.output
    opening = re.search(r"fine-tuning [^\n]*", text).group(0)  # (after hub-free load bars)
    assert opening == ("fine-tuning pretrained:digits8 (digits) with loop (advantage "
                       "leave_one_out, clip 0.0001, β 0.0001) toward reward aesthetic_proxy; "
                       "gold reward (held out) digit_alignment; budget 2 epochs × 2 prompts × "
                       "k=2 = 8 samples, 2 optimizer steps")
    assert text.index(opening) < text.index("before → after")
    ba = json.loads((out / "eval_before_after.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    table = text[text.index("before → after"):]
    for name, key in (("reward", "reward/mean"), ("gold reward", "reward/gold_mean")):
        line = next(x for x in table.splitlines() if x.startswith(f"│ {name} "))
        assert f"{ba['before/' + key]:.3f}" in line and f"{ba['after/' + key]:.3f}" in line
        assert "after-training evaluation, 80 samples" in line
    kl = next(x for x in table.splitlines() if x.startswith("│ KL to base"))
    assert f"{rows[-2]['kl/base']:.3f}" in kl and "last training epoch (2)" in kl
    assert re.search(r"│ time .*\dm\d\ds", table)
    assert f"model:  {out / 'final'}" in text and f"report: {out / 'report.html'}" in text
    assert (out / "final").is_dir()

    html = (out / "report.html").read_text()
    summary = re.search(r"<div class='[^']*' id='summary'>(.*?)</div>", html, re.S).group(1)
    assert "(after-training evaluation)" in summary and "(last training epoch)" in summary
    assert "<th>source</th>" in summary
    # every metric of the last-metrics table has its sentence
    last = html[html.index("<h2>Last logged metrics</h2>"):html.index("<h2>Config</h2>")]
    assert "Source: the last logged training epoch (2)" in last
    for key in ("reward/mean", "reward/gold_mean", "kl/base", "queries/reward", "loss/policy",
                "alarm/gold", "time/epoch_s"):
        cell = re.search(rf"<th>{re.escape(key)}</th><td>[^<]*</td><td class='means'>([^<]*)</td>",
                         last)
        assert cell and len(cell.group(1)) > 20, key
    # grids labelled with their prompts; secondary plots and constant series folded away
    assert "before: rows = prompts" in html and "after: rows = prompts" in html
    assert (out / "samples" / "before.json").is_file() and (out / "plots" / "grid_before.png")
    prompts = json.loads((out / "samples" / "before.json").read_text())["rows"]
    assert prompts and all(isinstance(p, str) for p in prompts)
    start, end = html.index("<details id='secondary'>"), html.index("</details>")
    inside, outside = html[start:end], html[:start] + html[end:]
    for group in ("loss", "queries"):   # the 1e-10-scale policy loss, the straight queries line
        assert f"alt='{group}'" in inside and f"alt='{group}'" not in outside, group
    assert "policy/ratio_mean = 1" in inside    # constant series: listed, folded away too
    assert "Optimized reward: batch mean" in outside   # key curves carry their sentence
