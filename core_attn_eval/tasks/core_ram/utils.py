"""core_ram_<kind>: RAM of a core_* model on records of the four data kinds (see core_attn_eval.ram).

Records are the analysis schema (core_attn/data/samples/*/records.jsonl) with absolute file
paths, as :func:`core_attn_eval.tasks.ram_tasks` writes them.
"""

from PIL import Image

from core_attn_eval.ram import aggregate, parse_response


def ram_doc_to_visual(doc):
    paths = [doc["image"]] if doc.get("image") else doc.get("pages") or doc.get("frames") or []
    return [Image.open(p).convert("RGB") for p in paths]


def ram_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def ram_process_results(doc, results):
    return {"ram": parse_response(results[0])}


def ram_aggregate(payloads):
    return aggregate(payloads)
