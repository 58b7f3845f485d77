"""core_internvl: lmms-eval's own internvl model with core-attn settings (see settings.CoreSettings)."""

from __future__ import annotations

from lmms_eval.models.chat.internvl_hf import InternVLHf as _Chat

from ._mixin import CoreAttnModel


class CoreInternVLChat(CoreAttnModel, _Chat):
    """``lmms_eval.models.chat.internvl_hf.InternVLHf`` (chat only in lmms-eval) plus head_config, dense, sink, window, ablate, ablate_k, seed."""

    is_simple = False
