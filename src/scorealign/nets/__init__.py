"""Networks speaking ``model(x, t, cond) -> prediction``: a 2-D MLP and diffusers UNet adapters.

The names below are imported on first use (PEP 562 ``__getattr__``): ``scorealign.nets.cond``
or ``scorealign.nets.mlp`` alone (the policy, the samplers' guidance, the toy testbeds) does not
import ``diffusers`` through this package; ``from scorealign.nets import build_model`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scorealign.lazy import lazy_exports

#: public name -> the submodule that defines it
_WHERE = {
    "Cond": "cond", "drop_cond": "cond", "guided": "cond", "null_cond": "cond",
    "KINDS": "mlp", "TimeMLP": "mlp", "sinusoidal_embedding": "mlp",
    "LabelConditioner": "text", "TextConditioner": "text", "TextEmbedding": "text",
    "TextEncoder": "text", "get_text_encoder": "text",
    "CondUNet": "unet", "UNet": "unet", "diffusers_timesteps": "unet",
    "ModelConfig": "build", "build_model": "build", "load_pretrained": "build",
    "num_params": "build", "save_pretrained": "build",
}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from scorealign.nets.build import (ModelConfig, build_model, load_pretrained, num_params,
                                       save_pretrained)
    from scorealign.nets.cond import Cond, drop_cond, guided, null_cond
    from scorealign.nets.mlp import KINDS, TimeMLP, sinusoidal_embedding
    from scorealign.nets.text import (LabelConditioner, TextConditioner, TextEmbedding,
                                      TextEncoder, get_text_encoder)
    from scorealign.nets.unet import CondUNet, UNet, diffusers_timesteps


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
