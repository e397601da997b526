"""Advantage estimators: rewards ``[B]`` and prompt ids ``[B]`` → advantages ``[B]``.

A *group* is the set of samples that share a prompt id (K rollouts of one prompt). Estimators are
pure, vectorized functions registered in ``ADVANTAGES`` with the signature
``fn(rewards, prompt_ids, [values,] *, hyper-parameters)``; the one stateful estimator, DDPO's
per-prompt running statistics, keeps its state in :class:`PerPromptStatTracker`, which has
``state_dict``/``load_state_dict`` for an exact resume. :func:`build_advantage` gives the trainer
one callable object (with a state dict, empty for the stateless estimators) for any registered
name.

Statistics are computed in float64 and returned in the rewards' dtype. Standard deviations are
population ones (divide by n), as ddpo-pytorch and flow_grpo compute them (``np.std``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from scorealign.registry import Registry
from scorealign.rl.losses import split_signature

ADVANTAGES = Registry("advantage estimator")

PromptIds = Tensor | Sequence[int] | Sequence[str]


def group_index(prompt_ids: PromptIds) -> tuple[Tensor, list[Any]]:
    """Group samples by prompt id.

    Returns:
        (``inv`` int64 ``[B]`` with values in 0..G−1, the G keys as Python ints or strings, in
        order of first appearance).
    """
    if isinstance(prompt_ids, Tensor):
        prompt_ids = prompt_ids.reshape(-1).tolist()
    index: dict[Any, int] = {}
    inv = [index.setdefault(k, len(index)) for k in prompt_ids]
    return torch.tensor(inv, dtype=torch.int64), list(index)


def _group_moments(r: Tensor, inv: Tensor, n_groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group count, mean and population std of float64 ``r``; each ``[G]``."""
    count = torch.zeros(n_groups, dtype=r.dtype).index_add(0, inv, torch.ones_like(r))
    mean = torch.zeros(n_groups, dtype=r.dtype).index_add(0, inv, r) / count
    sq = torch.zeros(n_groups, dtype=r.dtype).index_add(0, inv, (r - mean[inv]) ** 2)
    return count, mean, (sq / count).sqrt()


def _check_rewards(rewards: Tensor, prompt_ids: PromptIds | None) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be [B], got {tuple(rewards.shape)}")
    if prompt_ids is not None and len(prompt_ids) != rewards.shape[0]:
        raise ValueError(f"{len(prompt_ids)} prompt ids for {rewards.shape[0]} rewards")
    return rewards.detach().to(torch.float64)


def clip_advantages(adv: Tensor, adv_clip: float | None) -> Tensor:
    """Clamp advantages to [−adv_clip, adv_clip] (DDPO: 5); None leaves them as they are."""
    return adv if adv_clip is None else adv.clamp(-adv_clip, adv_clip)


def _out(adv64: Tensor, like: Tensor, adv_clip: float | None) -> Tensor:
    return clip_advantages(adv64, adv_clip).to(like.dtype)


@ADVANTAGES.register("batch", paper="Black+23 (DDPO), arXiv:2305.13301",
                     equation="A = (r − mean_B r)/(std_B r + eps): DDPO's whitening without "
                              "per-prompt tracking (eq. number not verified)")
def batch(rewards: Tensor, prompt_ids: PromptIds | None = None, *, eps: float = 1e-6,
          adv_clip: float | None = None) -> Tensor:
    r"""Whiten rewards over the whole batch.

    A_b = (r_b − (1/B) Σ r) / (std(r) + eps)

    Args:
        rewards: ``[B]``.
        prompt_ids: ignored (accepted for the common signature).
        eps: added to the std.
        adv_clip: clamp to ±adv_clip, or None.
    Returns:
        ``[B]`` advantages in the rewards' dtype.
    """
    r = _check_rewards(rewards, prompt_ids)
    adv = (r - r.mean()) / (r.std(unbiased=False) + eps)
    return _out(adv, rewards, adv_clip)


@ADVANTAGES.register("group", paper="Shao+24 (DeepSeekMath GRPO), arXiv:2402.03300; Liu+25 "
                                    "(Flow-GRPO), arXiv:2505.05470",
                     equation="Â_i = (r_i − mean(r))/std(r) over the prompt's group (GRPO outcome "
                              "supervision, §4.1.2; eq. number not verified)",
                     properties=frozenset({"zero_mean_per_group"}))
def group(rewards: Tensor, prompt_ids: PromptIds, *, std_normalize: bool = True,
          global_std: bool = False, eps: float = 1e-4, adv_clip: float | None = None) -> Tensor:
    r"""Group-relative advantages (GRPO): center, and optionally scale, within each prompt.

    A_i = (r_i − mean_{g(i)} r) / (std_{g(i)} r + eps)   [Shao+24 GRPO]

    Args:
        rewards: ``[B]``.
        prompt_ids: ``[B]`` group key of each sample.
        std_normalize: divide by the group std (False: Dr.GRPO-style centering only).
        global_std: divide by the batch std instead of the group std (flow_grpo option).
        eps: added to the std (flow_grpo: 1e-4).
        adv_clip: clamp to ±adv_clip, or None.
    Returns:
        ``[B]`` advantages; a group of one sample gets 0.
    """
    r = _check_rewards(rewards, prompt_ids)
    inv, keys = group_index(prompt_ids)
    _, mean, std = _group_moments(r, inv, len(keys))
    adv = r - mean[inv]
    if std_normalize:
        adv = adv / ((r.std(unbiased=False) if global_std else std[inv]) + eps)
    return _out(adv, rewards, adv_clip)


@ADVANTAGES.register("leave_one_out", paper="Kool+19 (REINFORCE with K samples, ICLR-W); "
                                            "Ahmadian+24 (RLOO), arXiv:2402.14740; Gupta+25 "
                                            "(LOOP), arXiv:2503.00897",
                     equation="A_i = r_i − 1/(K−1) Σ_{j≠i} r_j = K/(K−1)(r_i − r̄)",
                     special_cases=(("group", {"std_normalize": False}, "times K/(K−1)"),),
                     properties=frozenset({"zero_mean_per_group", "needs_k_ge_2"}))
def leave_one_out(rewards: Tensor, prompt_ids: PromptIds, *,
                  adv_clip: float | None = None) -> Tensor:
    r"""Leave-one-out baseline: each sample against the mean of its group's other samples.

    A_i = r_i − 1/(K_g−1) Σ_{j∈g, j≠i} r_j = K_g/(K_g−1) · (r_i − r̄_g)   [Gupta+25 LOOP]

    Args:
        rewards: ``[B]``.
        prompt_ids: ``[B]``; every group needs K_g ≥ 2 samples (groups may differ in size).
        adv_clip: clamp to ±adv_clip, or None.
    Returns:
        ``[B]`` advantages; they sum to zero within each group.
    Raises:
        ValueError: naming the prompts that have fewer than two samples.
    """
    r = _check_rewards(rewards, prompt_ids)
    inv, keys = group_index(prompt_ids)
    count = torch.zeros(len(keys), dtype=r.dtype).index_add(0, inv, torch.ones_like(r))
    if bool((count < 2).any()):
        lonely = {keys[g]: int(count[g]) for g in range(len(keys)) if count[g] < 2}
        raise ValueError(f"leave_one_out needs K >= 2 samples per prompt; prompts with fewer: "
                         f"{lonely} (roll out k > 1 samples per prompt)")
    total = torch.zeros(len(keys), dtype=r.dtype).index_add(0, inv, r)
    # Leave-one-out baseline: mean of the other K−1 rewards of the same prompt.
    baseline = (total[inv] - r) / (count[inv] - 1)
    return _out(r - baseline, rewards, adv_clip)


@ADVANTAGES.register("value", paper="Fan+23 (DPOK), arXiv:2305.16381; Sutton+99 (baseline)",
                     equation="A = r − V(x) with a learned value baseline (DPOK; eq. number not "
                              "verified)",
                     properties=frozenset({"needs_values"}))
def value(rewards: Tensor, prompt_ids: PromptIds | None = None, values: Tensor | None = None, *,
          adv_clip: float | None = None) -> Tensor:
    r"""Advantages against given baseline values.

    A_b = r_b − V_b  (``values`` ``[B]``)  or  A_{b,t} = r_b − V(x_t^b, c_b, t)  (``[B, T]``)

    Args:
        rewards: ``[B]``.
        prompt_ids: ignored (accepted for the common signature).
        values: ``[B]`` or ``[B, T]`` baseline predictions (detached here).
        adv_clip: clamp to ±adv_clip, or None.
    Returns:
        ``[B]`` or ``[B, T]`` advantages, like ``values``.
    """
    r = _check_rewards(rewards, prompt_ids)
    if values is None or values.shape[0] != r.shape[0] or values.dim() not in (1, 2):
        got = None if values is None else tuple(values.shape)
        raise ValueError(f"value advantages need values [B] or [B, T] with B={r.shape[0]}, "
                         f"got {got}")
    v = values.detach().to(torch.float64)
    adv = r - v if v.dim() == 1 else r[:, None] - v
    return _out(adv, rewards, adv_clip)


class PerPromptStatTracker:
    """DDPO's per-prompt running reward statistics, with a state dict for exact resume.

    Each prompt keeps its last ``buffer_size`` rewards. A batch's rewards are appended first; then
    a prompt whose buffer holds fewer than ``min_count`` rewards is normalized with the *batch*
    mean and std, otherwise with its buffer's: A = (r − mean)/(std + eps)   [Black+23 DDPO,
    ``PerPromptStatTracker``; behaviour re-derived from ddpo-pytorch ``stat_tracking.py``].

    Args:
        buffer_size: rewards kept per prompt (DDPO: 16–32).
        min_count: buffer size from which the prompt's own statistics are used (DDPO: 16).
        eps: added to the std (DDPO: 1e-6).
    """

    def __init__(self, buffer_size: int = 16, min_count: int = 16, eps: float = 1e-6):
        if buffer_size < 1 or not 0 <= min_count <= buffer_size:
            raise ValueError(f"need buffer_size >= 1 and 0 <= min_count <= buffer_size, got "
                             f"buffer_size={buffer_size}, min_count={min_count}")
        self.buffer_size, self.min_count, self.eps = buffer_size, min_count, eps
        self.buffers: dict[Any, list[float]] = {}

    def update(self, rewards: Tensor, prompt_ids: PromptIds) -> Tensor:
        """Append the batch to the buffers and return its advantages ``[B]`` (float64)."""
        r = _check_rewards(rewards, prompt_ids)
        inv, keys = group_index(prompt_ids)
        mean, std = torch.empty(len(keys), dtype=r.dtype), torch.empty(len(keys), dtype=r.dtype)
        batch_mean, batch_std = r.mean(), r.std(unbiased=False)
        for g, key in enumerate(keys):
            buf = (self.buffers.get(key, []) + r[inv == g].tolist())[-self.buffer_size:]
            self.buffers[key] = buf
            if len(buf) < self.min_count:  # too few: fall back to batch statistics
                mean[g], std[g] = batch_mean, batch_std
            else:
                b = torch.tensor(buf, dtype=r.dtype)
                mean[g], std[g] = b.mean(), b.std(unbiased=False)
        return (r - mean[inv]) / (std[inv] + self.eps)

    def stats(self) -> dict[str, float]:
        """Logging summary: number of tracked prompts and mean buffer length."""
        n = len(self.buffers)
        mean_len = sum(map(len, self.buffers.values())) / n if n else 0.0
        return {"adv/tracked_prompts": float(n), "adv/mean_buffer_len": mean_len}

    def state_dict(self) -> dict[str, Any]:
        """Plain values and float64 tensors (bit-exact); fits ``train.checkpoint``."""
        keys = list(self.buffers)
        flat = [x for k in keys for x in self.buffers[k]]
        return {"buffer_size": self.buffer_size, "min_count": self.min_count, "eps": self.eps,
                "keys": keys, "values": torch.tensor(flat, dtype=torch.float64),
                "lengths": torch.tensor([len(self.buffers[k]) for k in keys], dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore buffers saved by :meth:`state_dict`; the settings must match."""
        saved = (state["buffer_size"], state["min_count"], state["eps"])
        if saved != (self.buffer_size, self.min_count, self.eps):
            mine = (self.buffer_size, self.min_count, self.eps)
            raise ValueError(f"per-prompt tracker state has (buffer_size, min_count, eps)="
                             f"{saved}, this tracker {mine}")
        chunks = torch.split(state["values"].to(torch.float64), state["lengths"].tolist())
        self.buffers = {k: c.tolist() for k, c in zip(state["keys"], chunks)}


@ADVANTAGES.register("per_prompt", paper="Black+23 (DDPO), arXiv:2305.13301",
                     equation="per-prompt running mean/std normalization (DDPO §5 / App.; "
                              "eq. number not verified)",
                     properties=frozenset({"stateful", "keyed_by_prompt"}))
def per_prompt(rewards: Tensor, prompt_ids: PromptIds, *, tracker: PerPromptStatTracker,
               adv_clip: float | None = None) -> Tensor:
    r"""DDPO advantages from per-prompt running statistics (updates ``tracker``).

    A_i = (r_i − mean_{buf(c_i)}) / (std_{buf(c_i)} + eps), batch statistics while
    |buf(c_i)| < min_count   [Black+23 DDPO]

    Args:
        rewards: ``[B]``.
        prompt_ids: ``[B]`` stable prompt keys (the same prompt must get the same id every epoch).
        tracker: the run's :class:`PerPromptStatTracker` (state).
        adv_clip: clamp to ±adv_clip (DDPO: 5), or None.
    Returns:
        ``[B]`` advantages in the rewards' dtype.
    """
    return _out(tracker.update(rewards, prompt_ids), rewards, adv_clip)


class AdvantageEstimator:
    """A registered estimator bound to its hyper-parameters; callable, with a state dict.

    ``est(rewards, prompt_ids, values=None) -> adv``; ``state_dict()`` is ``{}`` for the stateless
    estimators and the tracker's state for ``per_prompt``.
    """

    def __init__(self, name: str, hyper: dict[str, Any],
                 tracker: PerPromptStatTracker | None = None):
        self.name, self.hyper, self.tracker = name, hyper, tracker
        self.entry = ADVANTAGES.get(name)

    def __call__(self, rewards: Tensor, prompt_ids: PromptIds | None,
                 values: Tensor | None = None) -> Tensor:
        kw = dict(self.hyper)
        if self.tracker is not None:
            kw["tracker"] = self.tracker
        if "needs_values" in self.entry.properties:
            return self.entry.fn(rewards, prompt_ids, values, **kw)
        return self.entry.fn(rewards, prompt_ids, **kw)

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict() if self.tracker is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.tracker is not None:
            self.tracker.load_state_dict(state)
        elif state:
            raise ValueError(f"advantage estimator {self.name!r} is stateless; got a state")


def build_advantage(name: str, **hyper: Any) -> AdvantageEstimator:
    """Bind estimator ``name`` to ``hyper``; unknown names or keys raise, listing the valid ones.

    For ``per_prompt`` the keys ``buffer_size``, ``min_count`` and ``eps`` build the tracker.
    """
    entry = ADVANTAGES.get(name)
    tracker = None
    if "stateful" in entry.properties:
        tracker_keys = ("buffer_size", "min_count", "eps")
        tracker = PerPromptStatTracker(**{k: hyper.pop(k) for k in tracker_keys if k in hyper})
    allowed = set(split_signature(entry.fn)[1]) - {"tracker"}
    unknown = set(hyper) - allowed
    if unknown:
        extra = " plus buffer_size, min_count, eps" if tracker is not None else ""
        raise TypeError(f"advantage estimator {name!r} got unknown hyper-parameters "
                        f"{sorted(unknown)}; valid: {sorted(allowed)}{extra}")
    return AdvantageEstimator(name, hyper, tracker)
