"""Continuous-time RL for SDE-driven control problems: environments (LQ with closed forms, double
well), occupation-time sampling, CT policy gradient, CT-TRPO and CT-PPO, and their trainer."""
