"""RL fine-tuning of diffusion samplers: advantage estimators and policy losses (pure tensors).

``ADVANTAGES`` and ``RL_LOSSES`` are the registries; LOOP is ``leave_one_out`` + ``ppo_clip``
(docs/methods/loop.md). The one trainer that runs them is ``rl.trainer.Finetuner`` (config
``rl.config.FinetuneConfig``, command ``scorealign finetune`` in ``rl.cli``; docs/finetune.md).
"""

from scorealign.rl.advantages import (ADVANTAGES, AdvantageEstimator, PerPromptStatTracker,
                                      batch, build_advantage, clip_advantages, group,
                                      group_index, leave_one_out, per_prompt, value)
from scorealign.rl.losses import (DEFAULT_ADVANTAGE, RL_LOSSES, LossOut, dpok, grpo, loop,
                                  ppo_clip, ratio_metrics, reduce_steps, reinforce,
                                  reward_backprop, score_as_action, split_signature)
from scorealign.rl.adjoint_matching import adjoint_matching  # registers it
from scorealign.rl.flow_methods import (dance_grpo, diffusion_nft, flow_grpo,  # registers them
                                        flow_grpo_fast, mixgrpo)

__all__ = ["ADVANTAGES", "adjoint_matching", "dance_grpo", "diffusion_nft", "flow_grpo", "flow_grpo_fast",
           "mixgrpo", "AdvantageEstimator", "DEFAULT_ADVANTAGE", "LossOut",
           "PerPromptStatTracker", "RL_LOSSES", "batch", "build_advantage", "clip_advantages",
           "dpok", "group", "group_index", "grpo", "leave_one_out", "loop", "per_prompt",
           "ppo_clip", "ratio_metrics", "reduce_steps", "reinforce", "reward_backprop",
           "score_as_action", "split_signature", "value"]
