"""Self-contained files shipped inside an exported digits pipeline directory.

Each module imports only torch, diffusers and transformers (never scorealign), so the exported
directory loads with ``DiffusionPipeline.from_pretrained(DIR, custom_pipeline=DIR/pipeline.py,
trust_remote_code=True)`` where scorealign is not installed. ``commands.digits_diffusers`` copies
them: ``pipeline.py`` (:mod:`.pipeline`), ``scheduler/scheduling_affine_steps.py`` and
``conditioner/digits_conditioner.py``.
"""

from pathlib import Path

HUB_DIR = Path(__file__).resolve().parent

__all__ = ["HUB_DIR"]
