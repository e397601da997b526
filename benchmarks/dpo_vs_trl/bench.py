"""scorealign's DPO vs TRL's DPOTrainer: step throughput, peak memory, and loss agreement.

    bash benchmarks/dpo_vs_trl/run.sh [--steps 40 --batch 16]

Run by run.sh inside its own virtualenv (TRL is not a project dependency). Same tiny GPT-2
(built from one config and seed), same synthetic pairs, same batch size, learning rate, AdamW,
clipping and a reference model run every step in both. Each trainer runs in its own subprocess so
that its peak memory is its own; throughput is the median step rate after warm-up; results are
ratios scorealign / TRL measured in this one invocation (medians over alternating rounds). The
loss check evaluates both implementations on the same tokenized batch with a policy and a
*different* reference model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
ALPHABET = "abcdefgh:"
MODEL = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64}


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Synthetic prompt/chosen/rejected records over a 9-character alphabet."""
    g = torch.Generator().manual_seed(seed)

    def word(lo: int, hi: int) -> str:
        k = int(torch.randint(lo, hi, (1,), generator=g))
        return "".join(ALPHABET[int(i)] for i in torch.randint(8, (k,), generator=g))

    return [{"prompt": word(2, 8) + ":", "chosen": word(2, 16), "rejected": word(2, 16)}
            for _ in range(n)]


def build(seed: int = 0):
    """(tokenizer, GPT-2) exactly as ``scorealign dpo`` builds them for this data."""
    from scorealign.preference.tiny import char_tokenizer, tiny_gpt2

    tok = char_tokenizer(ALPHABET)
    model = tiny_gpt2(len(tok), seed=seed, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, **MODEL)
    return tok, model


class PeakRSS:
    """Peak resident memory (or CUDA allocation) above the level at entry, sampled every 2 ms."""

    def __enter__(self):
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, False
        self.base = self.proc.memory_info().rss
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.mib = (self.peak - self.base) / 2**20
        if torch.cuda.is_available():
            self.mib = (torch.cuda.max_memory_allocated() - self.cuda_base) / 2**20


def worker_ours(args, tmp: Path) -> dict:
    from scorealign.config import load_config
    from scorealign.preference.config import DPOConfig
    from scorealign.preference.trainer import train
    from scorealign.train.rundir import RunDir

    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_records(args.records)))
    cfg_file = tmp / "cfg.yaml"
    cfg_file.write_text(json.dumps({
        "device": "auto", "model": {"source": "tiny_gpt2", **MODEL, "init_seed": 0},
        "data": {"source": "jsonl", "path": str(data), "max_length": 64, "max_prompt_length": 32},
        "loss": {"name": "sigmoid", "params": {"beta": 0.1}}, "reference": {"mode": "model"},
        "train": {"steps": args.steps, "batch_size": args.batch, "lr": 1e-4, "max_grad_norm": 1.0,
                  "log_every": args.log_every, "ckpt_every": 10**6, "keep_checkpoints": 1,
                  "progress": False, "seed": 0}}))
    cfg = load_config(cfg_file, DPOConfig)
    run = RunDir.create(tmp / "run", cfg)
    import accelerate  # noqa: F401  - imports outside the measured region, as in the TRL worker

    build(0)
    with PeakRSS() as mem:
        train(cfg, run)
    rates = [r["perf/steps_per_s"] for r in run.read_metrics() if "perf/steps_per_s" in r]
    return {"steps_per_s": statistics.median(rates[1:]), "peak_mib": mem.mib}


def trl_trainer(args, tmp: Path, model, ref, tok, loss_type: str, label_smoothing: float = 0.0):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    cfg = DPOConfig(output_dir=str(tmp / "trl"), per_device_train_batch_size=args.batch,
                    max_steps=args.steps, learning_rate=1e-4, lr_scheduler_type="constant",
                    warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
                    logging_steps=args.log_every, save_strategy="no", report_to="none",
                    beta=0.1, loss_type=[loss_type], label_smoothing=label_smoothing,
                    max_length=64, precompute_ref_log_probs=False, disable_dropout=True,
                    dataloader_num_workers=0, seed=0, use_cpu=not torch.cuda.is_available())
    return DPOTrainer(model=model, ref_model=ref, args=cfg, processing_class=tok,
                      train_dataset=Dataset.from_list(make_records(args.records)))


def worker_trl(args, tmp: Path) -> dict:
    from transformers import TrainerCallback

    tok, model = build(0)
    _, ref = build(0)

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.t = []

        def on_step_end(self, *a, **k):
            self.t.append(time.perf_counter())

    trainer = trl_trainer(args, tmp, model, ref, tok, "sigmoid")
    cb = StepTimes()
    trainer.add_callback(cb)
    with PeakRSS() as mem:
        trainer.train()
    # Windows of log_every steps, like scorealign's perf/steps_per_s; the first window is warm-up.
    w = args.log_every
    rates = [w / (cb.t[i + w] - cb.t[i]) for i in range(0, len(cb.t) - w, w)]
    return {"steps_per_s": statistics.median(rates[1:]), "peak_mib": mem.mib}


def loss_agreement(args, tmp: Path) -> list[dict]:
    """Per-batch mean loss of TRL and scorealign on identical token ids, policy ≠ reference."""
    from scorealign.preference.data import PairCollator, PreferencePair, tokenize_example
    from scorealign.preference.logratio import concatenated_logps
    from scorealign.preference.losses import PairLogps
    from scorealign.preference.objectives import resolve

    cases = [("sigmoid", 0.0, "sigmoid", {}), ("hinge", 0.0, "hinge", {}),
             ("robust", 0.1, "robust", {"eps": 0.1}),
             ("ipo", 0.0, "rainbowpo", {"link": "ipo", "length_normalization": True}),
             ("sigmoid_norm", 0.0, "rainbowpo", {"length_normalization": True})]
    out = []
    for trl_name, ls, ours_name, params in cases:
        # Fresh models per case: DPOTrainer patches the models it is given (fused LM head), and a
        # model passed to a second DPOTrainer gives reference log-probs off by ~5e-3 in TRL 1.16.
        tok, policy = build(0)
        _, ref = build(1)
        trainer = trl_trainer(args, tmp, policy, ref, tok, trl_name, ls)
        rows = [trainer.train_dataset[i] for i in range(args.batch)]
        inputs = trainer._prepare_inputs(trainer.data_collator(rows))
        with torch.no_grad():
            trl_loss = float(trainer.compute_loss(trainer.model, inputs))
        items = [{"prompt": r["prompt_ids"], "chosen": r["chosen_ids"], "rejected": r["rejected_ids"]}
                 for r in rows]
        ours_tok = [tokenize_example(tok, PreferencePair(**rec), max_length=64, max_prompt_length=64)
                    for rec in make_records(args.records)[: args.batch]]
        batch = {k: v.to(trainer.accelerator.device) for k, v in
                 PairCollator(tok.pad_token_id)(items, list(range(len(items)))).items()}
        with torch.no_grad():
            pw, pl = concatenated_logps(trainer.model, batch)
            rw, rl = concatenated_logps(trainer.ref_model, batch)
        lp = PairLogps(pw.logp, pl.logp, pw.n_tokens, pl.n_tokens, rw.logp, rl.logp)
        ours = float(resolve(ours_name, {"beta": 0.1, **params})(lp).losses.mean())
        out.append({"trl_loss_type": trl_name + (f" (label_smoothing={ls})" if ls else ""),
                    "scorealign": f"{ours_name} {params}" if params else ours_name,
                    "trl": trl_loss, "ours": ours, "abs_diff": abs(trl_loss - ours),
                    "same_token_ids": ours_tok == items})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per side (medians)")
    ap.add_argument("--worker", choices=["ours", "trl"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if args.worker:
            fn = worker_ours if args.worker == "ours" else worker_trl
            print("RESULT " + json.dumps(fn(args, Path(d))))
            return
        rounds: dict[str, list[dict]] = {"ours": [], "trl": []}
        for i in range(args.rounds):  # alternate the order so that load drifts hit both sides
            for who in (("ours", "trl") if i % 2 == 0 else ("trl", "ours")):
                p = subprocess.run([sys.executable, __file__, "--worker", who, *sys.argv[1:]],
                                   capture_output=True, text=True, env=os.environ)
                line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                if p.returncode or not line:
                    sys.exit(f"{who} worker failed:\n{p.stderr[-3000:]}")
                rounds[who].append(json.loads(line[0][7:]))
        res = {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]} | {"rounds": rs}
               for who, rs in rounds.items()}
        agree = loss_agreement(args, Path(d))
    import transformers
    import trl

    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "trl": trl.__version__,
        "transformers": transformers.__version__, "steps": args.steps, "batch_pairs": args.batch,
        "ours": res["ours"], "trl_run": res["trl"],
        "throughput_ratio": res["ours"]["steps_per_s"] / res["trl"]["steps_per_s"],
        "peak_memory_ratio": res["ours"]["peak_mib"] / max(res["trl"]["peak_mib"], 1e-9),
        "loss_agreement": agree}
    tag = "cuda" if torch.cuda.is_available() else "cpu"
    (HERE / f"results_{tag}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
