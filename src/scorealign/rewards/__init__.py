"""Rewards: ``reward(samples, prompts, meta) -> Tensor[B]`` float32, registered in ``REWARDS``.

Built-ins: JPEG (in)compressibility, a brightness/contrast aesthetic proxy, digits prompt
alignment, a LAION-style CLIP aesthetic scorer, CLIPScore, PickScore, HPSv2, ImageReward, an OCR
reward and a VLM yes/no reward (local directories or cached hub ids), a 2-D target; composition
(weighted sums, normalization), a gold reward set, user callables by import path or in-process
(``rewards.inprocess``), async scoring.
"""

from scorealign.rewards.base import (REWARDS, ImportedReward, Reward, RewardError, build_reward,
                                     check_reward_output, is_differentiable, load_callable,
                                     require_differentiable, reward_name, to_uint8)
from scorealign.rewards.compose import (AsyncReward, Normalized, RewardOutput, RewardSet,
                                        RunningMoments, WeightedSum, build_reward_set)
from scorealign.rewards.digits import DigitAlignment
from scorealign.rewards.image import BrightnessContrast, JpegReward, TargetDistance, jpeg_size_kb
from scorealign.rewards.laion import LaionAesthetic, load_head, mlp_from_state_dict
# learned reward models (each module registers its factories; weights load lazily, offline)
from scorealign.rewards import clip, imagereward, ocr, vlm  # noqa: E402,F401
from scorealign.rewards.inprocess import register_in_process  # noqa: E402

__all__ = ["AsyncReward", "BrightnessContrast", "DigitAlignment", "ImportedReward", "JpegReward",
           "LaionAesthetic", "Normalized", "REWARDS", "Reward", "RewardError", "RewardOutput",
           "RewardSet", "RunningMoments", "TargetDistance", "WeightedSum", "build_reward",
           "build_reward_set", "check_reward_output", "is_differentiable", "jpeg_size_kb",
           "load_callable", "load_head", "mlp_from_state_dict", "register_in_process",
           "require_differentiable", "reward_name", "to_uint8"]
