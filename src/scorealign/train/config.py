"""The ``scorealign pretrain`` config: data, forward SDE, network, optimization (DSM or
consistency), sampling. One module below both loops (train/pretrain.py, train/consistency.py) and
the base loader (train/bases.py), so none of them imports another's loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scorealign.config import FieldError, OptimConfig, Tracker, tracker_field
from scorealign.nets import ModelConfig
from scorealign.samplers.grids import GRIDS
from scorealign.train.task import DataConfig, SamplingConfig, SDEConfig, check_task

SOLVERS = ("heun_ode", "euler_ode", "ddim")


@dataclass(frozen=True)
class ConsistencyConfig:
    """Settings of ``train.objective: cd | ct`` (ignored for ``dsm``)."""

    teacher: str = field(default="pretrained:digits8", metadata={
        "help": "CD teacher: a pretraining run directory, a model directory, "
                "'pretrained:<name>', or 'exact' (the exact score of a Gaussian-mixture toy)"})
    init_from_teacher: bool = field(default=True, metadata={
        "help": "CD: start θ and θ⁻ from the teacher's weights (needs the same model config)"})
    solver: str = field(default="heun_ode", metadata={
        "help": "CD: PF-ODE step of the teacher: heun_ode | euler_ode | ddim (η = 0)"})
    teacher_guidance: float = field(default=1.0, metadata={
        "help": "CD: classifier-free guidance scale of the teacher (1: none)"})
    scale_mode: Literal["fixed", "progressive", "exponential"] = field(default="fixed", metadata={
        "help": "N(k): fixed = start_scales; progressive grows it to end_scales + 1; "
                "exponential: iCT's doubling curriculum min(s0 2^⌊k/K'⌋, s1) + 1"})
    start_scales: int = field(default=18, metadata={"help": "s₀ (fixed: N)"})
    end_scales: int = field(default=150, metadata={"help": "s₁ (progressive)"})
    target_ema_mode: Literal["fixed", "adaptive", "none"] = field(default="fixed", metadata={
        "help": "μ(k): fixed = start_ema; adaptive = exp(s₀ log μ₀ / N(k)); none: θ⁻ = "
                "stopgrad(θ) (iCT, ECT)"})
    start_ema: float = field(default=0.95, metadata={"help": "μ₀, target-network EMA"})
    grid: str = field(default="karras", metadata={"help": "discretization t_1..t_N (a GRIDS name)"})
    rho: float = field(default=7.0, metadata={"help": "ρ of the karras grid"})
    distance: Literal["l2", "pseudo_huber"] = field(default="l2", metadata={
        "help": "d(·,·): l2 (mean squared error) or pseudo_huber (iCT)"})
    huber_c: float | None = field(default=None, metadata={
        "help": "pseudo-Huber c (null: 0.00054 sqrt(D); 0: the norm ‖a − b‖, ECT's c = 0)"})
    pair_sampling: Literal["uniform", "lognormal", "ect"] = field(default="uniform", metadata={
        "help": "pairs (t_{n+1}, t_n): uniform index n on the grid; lognormal: iCT's "
                "discretized lognormal in σ = s/m; ect: continuous σ_t ~ lognormal and σ_r "
                "by ECT's shrinking mapping (no grid)"})
    p_mean: float = field(default=-1.1, metadata={
        "help": "P_mean of the lognormal in log σ (iCT / ECT / EDM: -1.1)"})
    p_std: float = field(default=2.0, metadata={"help": "P_std of the lognormal (2.0)"})
    weighting: Literal["uniform", "inv_dsigma"] = field(default="uniform", metadata={
        "help": "λ: uniform (Song+23) or inv_dsigma 1/(σ_{n+1} − σ_n) (iCT, ECT), σ = s/m"})
    ect_q: float = field(default=2.0, metadata={"help": "ECT: Δt shrinks by q per stage"})
    ect_k: float = field(default=8.0, metadata={"help": "ECT mapping n(t) = 1 + k sigmoid(-b t)"})
    ect_b: float = field(default=1.0, metadata={"help": "ECT mapping n(t) = 1 + k sigmoid(-b t)"})
    ect_stages: int = field(default=8, metadata={
        "help": "ECT: number of Δt stages over train.steps (run_ecm.sh: 8)"})
    init_from: str | None = field(default=None, metadata={
        "help": "initialize θ from this model (ECT: the pretrained diffusion model); "
                "overrides init_from_teacher; the prediction kind may differ (head re-read)"})

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise FieldError("solver", f"unknown solver {self.solver!r}; choose one of {SOLVERS}")
        if self.grid not in GRIDS:
            raise FieldError("grid", f"unknown grid {self.grid!r}; choose one of {sorted(GRIDS)}")
        if self.start_scales < 2:
            raise FieldError("start_scales", f"need N >= 2 grid points, got {self.start_scales}")
        if self.scale_mode == "progressive" and self.end_scales < self.start_scales:
            raise FieldError("end_scales", f"must be >= start_scales ({self.start_scales}), "
                                           f"got {self.end_scales}")
        if not 0.0 <= self.start_ema < 1.0:
            raise FieldError("start_ema", f"must be in [0, 1), got {self.start_ema}")
        if self.teacher_guidance < 0:
            raise FieldError("teacher_guidance", f"must be >= 0, got {self.teacher_guidance}")
        if self.huber_c is not None and self.huber_c < 0:
            raise FieldError("huber_c", f"must be >= 0, got {self.huber_c}")
        if self.p_std <= 0:
            raise FieldError("p_std", f"must be > 0, got {self.p_std}")
        if self.ect_q <= 1 or self.ect_stages < 1:
            raise FieldError("ect_q" if self.ect_q <= 1 else "ect_stages",
                             f"need ect_q > 1 and ect_stages >= 1, got {self.ect_q}, "
                             f"{self.ect_stages}")


@dataclass(frozen=True)
class TrainConfig(OptimConfig):
    """Optimization settings of the pretraining loop (the shared :class:`OptimConfig` fields
    lr, weight_decay, grad_clip, then the loop's own)."""

    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=128, metadata={"help": "global batch size"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    decay: Literal["constant", "cosine"] = field(default="cosine", metadata={"help": "lr decay"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the weights"})
    weighting: str = field(default="eps", metadata={"help": "DSM weighting λ(t) (sde/dsm.py)"})
    t_schedule: str = field(default="uniform", metadata={
        "help": "training times: uniform | stratified | logsnr (uniform in log s/m)"})
    objective: Literal["dsm", "cd", "ct"] = field(default="dsm", metadata={
        "help": "dsm: denoising score matching; cd / ct: consistency distillation / training "
                "(train/consistency.py, settings under consistency:)"})
    seed: int = field(default=0, metadata={"help": "run seed: all randomness derives from it"})
    log_every: int = field(default=25, metadata={"help": "metrics.jsonl interval (steps)"})
    ckpt_every: int = field(default=500, metadata={"help": "checkpoint interval (steps)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})

    def __post_init__(self) -> None:
        from scorealign.sde.dsm import WEIGHTINGS
        if self.weighting not in WEIGHTINGS:
            raise FieldError("weighting", f"unknown weighting {self.weighting!r}; choose one of "
                                          f"{sorted(WEIGHTINGS)}")
        from scorealign.sde.dsm import SCHEDULES
        if self.t_schedule not in SCHEDULES:
            raise FieldError("t_schedule", f"unknown time schedule {self.t_schedule!r}; choose "
                                           f"one of {list(SCHEDULES)}")
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise FieldError("lr" if self.lr <= 0 else "warmup_steps",
                             f"need lr > 0 and warmup_steps >= 0, got {self.lr}, "
                             f"{self.warmup_steps}")
        super().__post_init__()


@dataclass(frozen=True)
class PretrainConfig:
    """``scorealign pretrain``: data, forward SDE, network, optimization, sampling."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "training data"})
    sde: SDEConfig = field(default_factory=SDEConfig, metadata={"help": "forward process"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "network"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "optimization"})
    sample: SamplingConfig = field(default_factory=SamplingConfig,
                                   metadata={"help": "sampling for previews and evaluation"})
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig, metadata={
        "help": "consistency models (train.objective cd | ct)"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device"})
    tracker: Tracker = tracker_field()

    def __post_init__(self) -> None:
        check_task(self.data, self.model)


