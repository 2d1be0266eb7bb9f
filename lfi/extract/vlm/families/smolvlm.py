"""SmolVLM / SmolVLM2 (``model_type`` "smolvlm"): Idefics3's architecture and image layout, its own processor.

The model is Idefics3's (SigLIP frames, pixel shuffle by ``scale_factor``, a decoder in ``model.text_model``)
and its image processor splits images the same way: R x C tiles of ``max_image_size`` px, row-major, then
the global image last, each frame (t / patch / scale)^2 tokens in raster order; only the checkpoints' sizes
differ (e.g. SmolVLM2-256M/500M: 512 px tiles, 2048 px longest edge, patch 16, scale 4 -> 8 x 8 tokens).
What differs is the processor's text around the image tokens: a newline after each row of tiles and the
global image wrapped in ``<fake_token_around_image>`` on both sides. `Idefics3.expand` asks the processor
for that text (`replace_image_token`), so the Idefics3 family serves both; this module only names it.
SmolVLM's processor refuses to build without the ``num2words`` package (a dependency of lfi).
"""

from __future__ import annotations

from lfi.extract.vlm.families.idefics3 import Idefics3


class SmolVLM(Idefics3):
    name = "smolvlm"


FAMILY = SmolVLM()
