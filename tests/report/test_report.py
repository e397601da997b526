"""report.html: summary line first, curves against reward queries with units, per-step KL,
constant series listed instead of plotted, every image embedded (one shareable file); rendered
by a real headless Chromium when one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

from scorealign.config import dump_config
from scorealign.report.figures import constant_series, save_image_grid
from scorealign.report.html import summary_line, write_report


def _fake_run(tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config({"train": {"epochs": 5}}))
    rows = []
    for e in range(1, 6):
        r = {"step": e, "reward/mean": 0.1 + 0.05 * e, "reward/gold_mean": 0.9 - 0.01 * e,
             "queries/reward": 32.0 * e, "kl/base": 0.02 * e, "policy/ratio_mean": 1.0,
             "loss/policy": 1e-10, "time/epoch_s": 12.0, "opt/grad_norm": 1.0 / e}
        r.update({f"kl/step/{k:02d}": 0.001 * e * (k + 1) for k in range(4)})
        rows.append(r)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "eval_before_after.json").write_text(json.dumps({
        "before/reward/mean": 0.15, "after/reward/mean": 0.35,
        "before/reward/gold_mean": 0.89, "after/reward/gold_mean": 0.85}))
    g = torch.Generator().manual_seed(0)
    for name in ("before", "after"):
        save_image_grid(torch.rand(8, 1, 8, 8, generator=g) * 2 - 1, run / "samples" /
                        f"{name}.png", nrow=4)
    return run, rows


def test_summary_line_has_reward_before_after_gold_kl_and_time(tmp_path):
    run, rows = _fake_run(tmp_path)
    line = summary_line(rows, {"eval_before_after": json.loads(
        (run / "eval_before_after.json").read_text())})
    assert line == ("reward 0.150 → 0.350 · gold reward 0.890 → 0.850 (after-training evaluation) · "
                    "KL to base 0.000 → 0.100 nats (last training epoch) · time 1m00s")


def test_constant_series_are_detected_and_not_plotted(tmp_path):
    _, rows = _fake_run(tmp_path)
    const = constant_series(rows, ["policy/ratio_mean", "loss/policy", "reward/mean"])
    assert const == {"policy/ratio_mean": 1.0, "loss/policy": 1e-10}


def test_report_is_self_contained_with_summary_first(tmp_path):
    run, _ = _fake_run(tmp_path)
    text = write_report(run, title="t").read_text()
    body = text[text.index("<body>"):]
    assert re.search(r"<h1>t</h1>\s*<div class='summary' id='summary'><p class='headline'>", body)
    srcs = re.findall(r"<img src='([^']*)'", text)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert (run / "plots" / "reward.png").is_file() and (run / "plots" / "kl_per_step.png").is_file()
    assert not (run / "plots" / "policy.png").exists()   # ratio ≡ 1: listed, not plotted
    assert "policy/ratio_mean = 1" in text and "loss/policy = 1e-10" in text
    assert "kl/step/00" not in text                        # shown as a figure, not a table


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed")
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    run, _ = _fake_run(tmp_path)
    report = write_report(run, title="browser check")
    shared = tmp_path / "elsewhere" / "report.html"   # the file alone, away from its run dir
    shared.parent.mkdir()
    shutil.copy(report, shared)
    shutil.rmtree(run)
    args = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([*args, "--dump-dom", shared.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "reward 0.150 → 0.350" in dom and dom.count("<img") >= 6
    shot = tmp_path / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", "--window-size=1000,1400", shared.as_uri()],
                   capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # plots and grids drawn, not a blank page
