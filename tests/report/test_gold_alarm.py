"""The gold-reward alarm (report/gold.py): the rule at its margin, on synthetic metrics files
(raised / not raised, amber / red summary), and in one short real run of the README's Python API
example (brightness reward), whose terminal, metrics and report all say so."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from scorealign.config import dump_config
from scorealign.report.gold import (ALARM_KEY, GOLD_MARGIN, GoldAlarm, epoch_alarms, eval_alarm,
                                    gold_fell)
from scorealign.report.html import write_report

ROOT = Path(__file__).resolve().parents[2]


def test_rule_at_the_margin():
    assert GOLD_MARGIN == 0.05
    assert not gold_fell(0.95, 1.0)             # a fall of exactly the margin: no alarm
    assert gold_fell(0.9499, 1.0)               # just beyond it: alarm
    assert not gold_fell(1.0, 1.0) and not gold_fell(0.99, 1.0)
    assert gold_fell(0.5, 0.75, margin=0.2) and not gold_fell(0.55, 0.75, margin=0.2)
    assert gold_fell(0.999, 1.0, margin=0.0)    # margin 0: any fall
    assert not gold_fell(math.nan, 1.0) and not gold_fell(0.1, math.inf)
    with pytest.raises(ValueError, match="margin"):
        gold_fell(0.5, 1.0, margin=-0.1)


def test_epoch_and_eval_alarms_from_rows():
    golds = [1.0, 0.99, 0.95, 0.93, 0.97]
    rows = [{"step": i + 1, "reward/gold_mean": g} for i, g in enumerate(golds)]
    rows.append({"step": 5, "time/total_s": 3.0})         # a row without gold is skipped
    alarms = epoch_alarms(rows)
    assert [(a.where, a.gold, a.base) for a in alarms] == [("epoch 4", 0.93, 1.0)]
    assert epoch_alarms([{"step": 1, "reward/mean": 0.1}]) == []
    assert eval_alarm({"before/reward/gold_mean": 0.9, "after/reward/gold_mean": 0.85}) is None
    a = eval_alarm({"before/reward/gold_mean": 0.9, "after/reward/gold_mean": 0.6})
    assert a == GoldAlarm("the after-training evaluation", 0.6, 0.9)
    text = a.sentence("digit_alignment")
    for words in ("0.6000", "0.05 below the base model's 0.9000", "prompt alignment",
                  "never optimized", "proxy is being gamed"):
        assert words in text


def _run(tmp_path, golds, after_gold=None):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(
        {"reward": {"optimized": "aesthetic_proxy", "gold": {"name": "digit_alignment"}}}))
    rows = [{"step": i + 1, "reward/mean": 0.2 + 0.01 * i, "reward/gold_mean": g,
             "queries/reward": 32.0 * (i + 1), "time/epoch_s": 1.0}
            for i, g in enumerate(golds)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if after_gold is not None:
        (run / "eval_before_after.json").write_text(json.dumps({
            "before/reward/mean": 0.2, "after/reward/mean": 0.3,
            "before/reward/gold_mean": 1.0, "after/reward/gold_mean": after_gold, "samples": 80}))
    return write_report(run).read_text()


def _summary(text):
    return re.search(r"<div class='([^']*)' id='summary'>(.*?)</div>", text, re.S).groups()


@pytest.mark.parametrize("golds,after,level", [
    ([1.0, 0.99, 0.96, 0.95], None, "summary"),         # within the margin (edge included)
    ([1.0, 0.99, 0.95], 0.95, "summary"),
    ([1.0, 0.80, 0.99], None, "summary amber"),         # dipped, recovered by the end
    ([1.0, 0.80, 0.99], 0.97, "summary amber"),
    ([1.0, 0.99, 0.80], None, "summary red"),           # the last epoch is below
    ([1.0, 0.99, 0.98], 0.90, "summary red"),           # the after-training evaluation is below
])
def test_report_summary_colour_and_sentence(tmp_path, golds, after, level):
    cls, body = _summary(_run(tmp_path, golds, after))
    assert cls == level
    if level == "summary":
        assert "Gold-reward alarm" not in body and "stayed within 0.05" in body
    else:
        assert "id='gold-alarm'" in body and "Gold-reward alarm" in body
        assert "prompt alignment" in body and "proxy is being gamed" in body


README_REWARD = re.compile(r"<!-- api-example: my_rewards.py -->\n```python\n(.*?)```", re.S)


def test_readme_api_example_short_run_raises_the_alarm(tmp_path, monkeypatch, capsys):
    """The README's brightness reward, shortened (2 epochs, 3 steps, lr 1e-3): brightness rises,
    prompt alignment collapses; the terminal says so at the epoch, metrics record it, the report's
    summary is red with the sentence and not green."""
    import scorealign.api as api

    (tmp_path / "my_rewards.py").write_text(README_REWARD.search(
        (ROOT / "README.md").read_text()).group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    from my_rewards import brightness

    run = api.finetune("digits_loop", reward=brightness, out="runs/bright", set=[
        "train.epochs=2", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
        "train.minibatch_size=4", "train.sample_batch_size=4", "train.lr=1e-3", "device=cpu"])
    out = capsys.readouterr().out
    assert "Gold-reward alarm at epoch 2" in out and "prompt alignment" in out
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r[ALARM_KEY] for r in rows if ALARM_KEY in r] == [0.0, 1.0]
    ba = json.loads((run / "eval_before_after.json").read_text())
    assert ba["after/reward/mean"] > ba["before/reward/mean"]
    cls, body = _summary((run / "report.html").read_text())
    assert cls == "summary red" and "Gold-reward alarm" in body and "epoch 2" in body


def test_trainer_gold_check_uses_the_logged_base_after_resume():
    """Finetuner.gold_check: a fresh run takes its first epoch's gold as the base; a resumed one
    reads it (and whether the alarm was already said in words) from metrics.jsonl."""
    from types import SimpleNamespace

    from scorealign.rl.trainer import Finetuner

    said = []

    def fake(logged):
        return SimpleNamespace(
            run=SimpleNamespace(read_metrics=lambda: logged), _gold_base=None, _gold_said=False,
            acc=SimpleNamespace(print=said.append),
            cfg=SimpleNamespace(reward=SimpleNamespace(gold={"name": "digit_alignment"})))

    fresh = fake([])
    assert Finetuner.gold_check(fresh, 1, {"reward/gold_mean": 0.9})[ALARM_KEY] == 0.0
    assert Finetuner.gold_check(fresh, 2, {"reward/gold_mean": 0.86})[ALARM_KEY] == 0.0
    assert Finetuner.gold_check(fresh, 3, {"reward/gold_mean": 0.8})[ALARM_KEY] == 1.0
    assert said[-1].startswith("Gold-reward alarm at epoch 3") and "prompt alignment" in said[-1]
    assert Finetuner.gold_check(fresh, 4, {"reward/gold_mean": 0.7})[ALARM_KEY] == 1.0
    assert said[-1].startswith("gold alarm (epoch 4)")          # in words once, then one line
    assert Finetuner.gold_check(fresh, 5, {"reward/mean": 0.2}) == {"reward/mean": 0.2}

    resumed = fake([{"step": 1, "reward/gold_mean": 1.0, ALARM_KEY: 0.0},
                    {"step": 2, "reward/gold_mean": 0.5, ALARM_KEY: 1.0}])
    row = Finetuner.gold_check(resumed, 3, {"reward/gold_mean": 0.9})
    assert row[ALARM_KEY] == 1.0 and resumed._gold_base == 1.0
    assert said[-1] == "gold alarm (epoch 3): gold 0.9000 < base 1.0000 − 0.05"
