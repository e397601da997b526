"""Shared fixtures of the RPO / Diffusion-DPO tests: a tiny label-conditional digits UNet."""

from __future__ import annotations

import pytest

from scorealign.nets import ModelConfig, build_model, save_pretrained

TINY = ModelConfig(type="unet_cond", cond="label", kind="eps", sample_size=8,
                   block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=8,
                   label_dim=16)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialized tiny model directory (model.safetensors + model_config.json)."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    return save_pretrained(build_model(TINY, seed=0), path)


@pytest.fixture()
def tiny_base(tiny_model_dir):
    """A fresh :class:`~scorealign.preference.rpo.base.Base` on the tiny model (VP SDE)."""
    from scorealign.preference.rpo.base import load_base

    return load_base(tiny_model_dir)
