"""RAM extraction as lmms-eval tasks (``core_ram_<kind>``).

Data flow, all through lmms-eval's own machinery:

1. the model (any core_* class, through :class:`~core_attn_eval.models._mixin.CoreAttnModel`)
   answers a request of a ``core_ram_*`` task not by generating but with the sample's RAM: it
   rebuilds the record from the doc, encodes it with its own processor
   (:class:`core_attn.analysis.data.SampleBuilder`), runs one probed forward pass
   (:func:`core_attn.analysis.probe.measure_ram`) and returns the maps as a JSON string;
2. the task's ``process_results`` parses that string into the per-doc metric value;
3. lmms-eval gathers the per-doc values of every rank to rank 0, where the aggregation adds
   them into a :class:`core_attn.RamAccumulator` (sums and counts, so a data-parallel run
   gives exactly the single-process result) and writes a HeadConfig folder of the mean RAM to
   ``<ram_output>/<kind>`` (and the vision-head baseline to ``<ram_output>/<kind>-vision``).
"""

from __future__ import annotations

import json
import pathlib

import torch

TASK_PREFIX = "core_ram_"
KINDS = ("refcocog", "mmlongbench", "mmdocir", "vidstg")


def kind_of_task(task: str) -> str | None:
    """"core_ram_refcocog" -> "refcocog"; None for other tasks."""
    if not task.startswith(TASK_PREFIX):
        return None
    kind = task[len(TASK_PREFIX) :]
    if kind not in KINDS:
        raise ValueError(f"unknown RAM task {task!r}; kinds are {KINDS}")
    return kind


def ram_response(model, builder, doc: dict, kind: str, *, model_id: str | None, output: str) -> str:
    """One doc's RAM (and vision-head baseline) as the JSON string the task parses."""
    from core_attn.analysis.data import parse_record
    from core_attn.analysis.probe import measure_ram
    from core_attn.hf.attach import model_head_shape

    record = parse_record(doc, kind)
    sample = builder.build(record)
    result = measure_ram(model, sample.inputs, sample.query_index, sample.target_index, vision_index=sample.visual_index)
    _, _, num_kv_heads = model_head_shape(model)
    return json.dumps(
        {
            "kind": kind,
            "id": record.id,
            "ram": result.ram.tolist(),
            "vision": result.vision.tolist() if result.vision is not None else None,
            "model_id": model_id,
            "num_kv_heads": num_kv_heads,
            "output": output,
            "seq_len": sample.seq_len,
        }
    )


def parse_response(text: str) -> dict:
    """The payload of :func:`ram_response`; a ValueError names what the model returned instead."""
    try:
        payload = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise ValueError(
            f"a core_ram_* task needs a core_* model (it answers with RAM maps); got the answer {str(text)[:80]!r}"
        ) from None
    if not isinstance(payload, dict) or "ram" not in payload:
        raise ValueError(f"not a RAM payload: {str(text)[:80]!r}")
    return payload


def aggregate(payloads: list[dict]) -> float:
    """Accumulate the docs' maps, write the HeadConfig folders; returns the top head's mean RAM."""
    from core_attn import __version__
    from core_attn.analysis.probe import RamAccumulator
    from core_attn.heads import HeadConfig

    if not payloads:
        raise ValueError("no RAM samples to aggregate")
    first = payloads[0]
    ram, vision = RamAccumulator(), RamAccumulator()
    for p in payloads:
        ram.add(torch.tensor(p["ram"], dtype=torch.float32), task=p["kind"])
        if p.get("vision") is not None:
            vision.add(torch.tensor(p["vision"], dtype=torch.float32), task=p["kind"])
    root = pathlib.Path(first["output"])
    kinds = sorted({p["kind"] for p in payloads})
    name = kinds[0] if len(kinds) == 1 else "+".join(kinds)
    for accumulator, suffix, metric in ((ram, "", "ram"), (vision, "-vision", "vision_mass")):
        if accumulator.count() == 0:
            continue
        HeadConfig.from_scores(
            accumulator.mean(),
            num_kv_heads=first["num_kv_heads"],
            model_id=first.get("model_id"),
            metric=metric,
            provenance={
                "datasets": {k: accumulator.count(k) for k in kinds},
                "command": "lmms-eval core_ram task",
                "library_version": __version__,
                "std_max": float(accumulator.std().max()),
            },
        ).save_pretrained(root / f"{name}{suffix}")
    return float(ram.mean().max())
