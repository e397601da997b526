"""scorealign: align generative models with rewards and preferences.

A diffusion sampler is a policy in a controlled SDE: the score is the action, the reward is paid at
the end, and the KL to the base model is a path-space integral. See docs/conventions.md.
"""

__version__ = "0.1.0"
