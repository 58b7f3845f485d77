"""core_mlvu: MLVU (dev) per category, scored as lmms-eval's mlvu_dev scores it.

Prompts and answer extraction are lmms-eval's own (tasks/mlvu/utils.py). Differences: one
subtask per category, so every category's accuracy is a row of the results (the built-in task
only logs them), and a missing video raises FileNotFoundError instead of exiting the process.
A record may carry an absolute ``video_path`` (local copies); otherwise the video is
``$HF_HOME/mlvu/<video_name>`` as for the built-in task.
"""

import os

from lmms_eval.tasks.mlvu.utils import extract_characters_regex, mlvu_doc_to_text  # noqa: F401  (used by the yaml)

# category (task_type) -> column of the paper's MLVU table
CATEGORIES = {
    "topic_reasoning": "TR",
    "anomaly_reco": "AR",
    "needle": "NQA",
    "ego": "ER",
    "plotQA": "PQA",
    "order": "AO",
    "count": "AC",
}


def mlvu_doc_to_visual(doc):
    path = doc.get("video_path") or os.path.join(os.path.expanduser(os.getenv("HF_HOME", "~/.cache/huggingface")), "mlvu", doc["video_name"])
    if not os.path.exists(path):
        raise FileNotFoundError(f"MLVU video {path} not found (download the dataset's videos, or give records a video_path)")
    return [path]


def mlvu_process_results(doc, results):
    pred = extract_characters_regex(results[0])
    return {"acc": 1.0 if pred == doc["answer"] else 0.0}


def _only(category):
    def process_docs(dataset):
        return dataset.filter(lambda doc: doc["task_type"] == category)

    return process_docs


for _category in CATEGORIES:
    globals()[f"docs_{_category}"] = _only(_category)
