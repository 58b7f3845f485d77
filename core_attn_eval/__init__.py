"""core-attn for lmms-eval (optional: ``pip install "core-attn[eval]"``).

- models ``core_qwen3_vl``, ``core_qwen2_5_vl``, ``core_llava_onevision``, ``core_internvl``
  (entry-point group ``lmms_eval.models``): lmms-eval's own classes plus the model_args
  head_config, dense, sink, window, ablate, ablate_k, seed (see :mod:`.settings`);
- tasks ``core_mlvu`` and ``core_videomme`` with per-category scores (:func:`tasks_path`);
- ``core-attn sweep``: a task at several dense fractions against the dense baseline, as one
  table (:mod:`.sweep`).

core_attn never imports this package itself, and importing it does not import lmms-eval.
"""

from .settings import CoreSettings, PrefillTimer, configure
from .tasks import local_tasks, tasks_path

__all__ = ["CoreSettings", "PrefillTimer", "configure", "local_tasks", "tasks_path"]
