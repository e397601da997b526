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
    from scorealign.run.rundir import RunDir

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


def _ours_batch(items: list[dict], tok, device) -> dict:
    from scorealign.preference.data import PairCollator

    return {k: v.to(device) for k, v in
            PairCollator(tok.pad_token_id)(items, list(range(len(items)))).items()}


def _row(trl: float, ours: float, trl_name: str, ours_name: str, *, conversion: str = "",
         same_ids: bool | None = None) -> dict:
    out = {"trl_loss_type": trl_name, "scorealign": ours_name, "trl": trl, "ours": ours,
           "abs_diff": abs(trl - ours), "parity_1e-6": abs(trl - ours) <= 1e-6}
    if conversion:
        out["conversion"] = conversion
    if same_ids is not None:
        out["same_token_ids"] = same_ids
    return out


def loss_agreement(args, tmp: Path) -> list[dict]:
    """Per-batch mean loss of TRL and scorealign on identical token ids, policy ≠ reference."""
    from scorealign.preference.data import PreferencePair, tokenize_example
    from scorealign.preference.logratio import concatenated_logps
    from scorealign.preference.losses import PairLogps
    from scorealign.preference.objectives import resolve

    beta = 0.1
    # (TRL loss_type, label_smoothing, our objective, params, ours → TRL conversion)
    cases = [("sigmoid", 0.0, "sigmoid", {}, None), ("hinge", 0.0, "hinge", {}, None),
             ("robust", 0.1, "robust", {"eps": 0.1}, None),
             ("robust", 0.1, "rainbowpo", {"link": "robust", "eps": 0.1}, None),
             # IPO: ours is the authors' (βh − ½)², TRL's (h − 1/(2β))² = ours / β².
             ("ipo", 0.0, "rainbowpo", {"link": "ipo", "length_normalization": True}, "/ β²"),
             ("sigmoid_norm", 0.0, "rainbowpo", {"length_normalization": True}, None)]
    out = []
    for trl_name, ls, ours_name, params, conv in cases:
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
        batch = _ours_batch(items, tok, trainer.accelerator.device)
        with torch.no_grad():
            pw, pl = concatenated_logps(trainer.model, batch)
            rw, rl = concatenated_logps(trainer.ref_model, batch)
        lp = PairLogps(pw.logp, pl.logp, pw.n_tokens, pl.n_tokens, rw.logp, rl.logp)
        ours = float(resolve(ours_name, {"beta": beta, **params})(lp).losses.mean())
        if conv == "/ β²":
            ours = ours / beta**2
        out.append(_row(trl_loss, ours, trl_name + (f" (label_smoothing={ls})" if ls else ""),
                        f"{ours_name} {params}" if params else ours_name,
                        conversion=f"ours {conv}" if conv else "", same_ids=ours_tok == items))
    out += [_simpo_case(args, tmp), _orpo_case(args, tmp), _kto_case(args, tmp)]
    return out


def _split_rows(rows: list[dict]) -> list[dict]:
    """(prompt, chosen, rejected) ids from CPO/ORPO tokenized rows (prompt + completion ids)."""
    items = []
    for r in rows:
        p = r["prompt_input_ids"]
        for side in ("chosen", "rejected"):
            assert r[f"{side}_input_ids"][:len(p)] == p, "completion ids do not extend the prompt"
        items.append({"prompt": p, "chosen": r["chosen_input_ids"][len(p):],
                      "rejected": r["rejected_input_ids"][len(p):]})
    return items


def _reference_free_case(args, tmp: Path, trainer, tok, name: str, params: dict, trl_name: str):
    from scorealign.preference.logratio import concatenated_logps
    from scorealign.preference.losses import PairLogps
    from scorealign.preference.objectives import resolve

    rows = [trainer.train_dataset[i] for i in range(args.batch)]
    inputs = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.no_grad():
        trl_loss = float(trainer.get_batch_loss_metrics(trainer.model, inputs)[0])
        pw, pl = concatenated_logps(trainer.model, _ours_batch(_split_rows(rows), tok,
                                                                trainer.accelerator.device))
    ours = float(resolve(name, params)(PairLogps(pw.logp, pl.logp, pw.n_tokens,
                                                 pl.n_tokens)).losses.mean())
    return _row(trl_loss, ours, trl_name, f"{name} {params}")


def _simpo_case(args, tmp: Path) -> dict:
    """SimPO: TRL's CPOTrainer with loss_type="simpo" and cpo_alpha = 0 (no NLL term)."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    tok, policy = build(0)
    cfg = CPOConfig(output_dir=str(tmp / "cpo"), per_device_train_batch_size=args.batch,
                    report_to="none", beta=2.0, loss_type="simpo", simpo_gamma=0.5, cpo_alpha=0.0,
                    max_length=64, disable_dropout=True, dataloader_num_workers=0, seed=0,
                    use_cpu=not torch.cuda.is_available())
    trainer = CPOTrainer(model=policy, args=cfg, processing_class=tok,
                         train_dataset=Dataset.from_list(make_records(args.records)))
    return _reference_free_case(args, tmp, trainer, tok, "simpo", {"beta": 2.0, "gamma": 0.5},
                                "CPOTrainer simpo (cpo_alpha=0)")


def _orpo_case(args, tmp: Path) -> dict:
    """ORPO's odds-ratio term: TRL's ORPOTrainer (beta = our λ) vs ours minus its SFT term.

    The SFT terms differ by definition (TRL: one token mean over prompt + chosen tokens of the
    batch; ours: per-pair mean over completion tokens, Eq. 6); both values are reported.
    """
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from scorealign.preference.logratio import concatenated_logps
    from scorealign.preference.losses import PairLogps
    from scorealign.preference.objectives import resolve

    tok, policy = build(0)
    cfg = ORPOConfig(output_dir=str(tmp / "orpo"), per_device_train_batch_size=args.batch,
                     report_to="none", beta=0.1, max_length=64, disable_dropout=True,
                     dataloader_num_workers=0, seed=0, use_cpu=not torch.cuda.is_available())
    trainer = ORPOTrainer(model=policy, args=cfg, processing_class=tok,
                          train_dataset=Dataset.from_list(make_records(args.records)))
    rows = [trainer.train_dataset[i] for i in range(args.batch)]
    inputs = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.no_grad():
        trl_loss = float(trainer.get_batch_loss_metrics(trainer.model, inputs)[0])
        cw, cl, _, _, trl_nll = trainer.concatenated_forward(trainer.model, inputs)[:5]
        pw, pl = concatenated_logps(trainer.model, _ours_batch(_split_rows(rows), tok,
                                                                trainer.accelerator.device))
    lp = PairLogps(pw.logp, pl.logp, pw.n_tokens, pl.n_tokens)
    ours_loss = float(resolve("orpo", {"lam": 0.1})(lp).losses.mean())
    ours_sft = float((-pw.logp / pw.n_tokens).mean())
    row = _row(trl_loss - float(trl_nll), ours_loss - ours_sft,
               "ORPOTrainer odds-ratio term (loss − nll_loss)", "orpo {'lam': 0.1} − SFT term")
    row.update({"trl_full_loss": trl_loss, "ours_full_loss": ours_loss,
                "trl_nll_prompt_and_chosen_tokens": float(trl_nll),
                "ours_sft_completion_mean": ours_sft,
                "mean_token_logps_max_abs_diff": float(
                    (torch.cat([cw, cl]) - torch.cat([pw.logp / pw.n_tokens,
                                                      pl.logp / pl.n_tokens])).abs().max())})
    return row


def _kto_case(args, tmp: Path) -> dict:
    """KTO: TRL's KTOTrainer, reference ≠ policy; our loss on TRL's matched and KL token rows."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from scorealign.preference.data import pad_rows
    from scorealign.preference.logratio import concatenated_logps
    from scorealign.preference.losses import kto, kto_reference_point

    recs = [{"prompt": r["prompt"], "completion": r["chosen" if i % 3 else "rejected"],
             "label": bool(i % 3)} for i, r in enumerate(make_records(args.records))]
    tok, policy = build(0)
    _, ref = build(1)
    cfg = KTOConfig(output_dir=str(tmp / "kto"), per_device_train_batch_size=args.batch,
                    report_to="none", beta=0.1, desirable_weight=1.0, undesirable_weight=1.5,
                    max_length=64, disable_dropout=True, dataloader_num_workers=0, seed=0,
                    precompute_ref_log_probs=False, use_cpu=not torch.cuda.is_available())
    trainer = KTOTrainer(model=policy, ref_model=ref, args=cfg, processing_class=tok,
                         train_dataset=Dataset.from_list(recs))
    rows = [trainer.train_dataset[i] for i in range(args.batch)]
    inputs = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, inputs))
    prompts = [r["prompt_ids"] for r in rows]
    seqs = [p + r["completion_ids"] for p, r in zip(prompts, rows)] + \
           [p + r["KL_completion_ids"] for p, r in zip(prompts, rows)]
    batch = {k: v.to(trainer.accelerator.device) for k, v in
             pad_rows(seqs, [len(p) for p in prompts] * 2, tok.pad_token_id, "right").items()}
    with torch.no_grad():
        pol, pol_kl = concatenated_logps(trainer.model, batch)
        rf, rf_kl = concatenated_logps(trainer.ref_model, batch)
        z0 = kto_reference_point(pol_kl.logp, rf_kl.logp)
        label = torch.tensor([bool(r["label"]) for r in rows], device=pol.logp.device)
        losses, _ = kto(pol.logp, rf.logp, label, z0=z0, beta=0.1, lambda_d=1.0, lambda_u=1.5)
    return _row(trl_loss, float(losses.mean()), "KTOTrainer kto",
                "kto {'beta': 0.1, 'lambda_d': 1.0, 'lambda_u': 1.5}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per side (medians)")
    ap.add_argument("--worker", choices=["ours", "trl"], default=None)
    ap.add_argument("--parity-only", action="store_true", help="only the loss agreement "
                    "(writes loss_parity_{cpu,cuda}.json)")
    ap.add_argument("--quick", action="store_true", help="smoke run of the set-up and both "
                    "workers (3 steps, 1 round); writes under .cache/dpo_vs_trl-quick/, never the "
                    "committed results")
    args = ap.parse_args()
    out_dir = HERE
    if args.quick:
        args.steps, args.batch, args.records, args.log_every, args.rounds = 3, 4, 32, 1, 1
        out_dir = HERE.resolve().parents[1] / ".cache" / "dpo_vs_trl-quick"
        out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        if args.parity_only:
            agree = loss_agreement(args, Path(d))
            import trl

            tag = "cuda" if torch.cuda.is_available() else "cpu"
            (out_dir / f"loss_parity_{tag}.json").write_text(json.dumps(
                {"trl": trl.__version__, "torch": torch.__version__, "loss_agreement": agree},
                indent=1))
            print(json.dumps(agree, indent=1))
            if not all(r["parity_1e-6"] for r in agree):
                sys.exit("loss parity above 1e-6: " + ", ".join(
                    r["trl_loss_type"] for r in agree if not r["parity_1e-6"]))
            return
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
    (out_dir / f"results_{tag}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
