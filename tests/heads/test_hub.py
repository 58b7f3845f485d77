"""Head configs on the Hub: loading by repo id (offline cache, local server), pushing (HfApi patched),
the model card, the index of published rankings, attach() resolution and the push / show commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from heads_helpers import (
    COMMIT,
    COMMIT_2,
    HKV,
    HQ,
    LAYERS,
    make_config,
    populate_cache,
    tiny_text_model,
)
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

import core_attn
from core_attn import cli
from core_attn.heads import card as card_mod
from core_attn.heads import registry
from core_attn.heads.card import BEGIN_MARKER, END_MARKER, render_card
from core_attn.heads.config import CONFIG_NAME, SCORES_NAME, HeadConfig
from core_attn.heads.hub import HUB_FILES, resolve_folder, write_hub_folder

ROOT = Path(__file__).resolve().parents[2]
REPO = "someorg/tiny-text-core-heads"
HAS_MPL = True
try:
    import matplotlib  # noqa: F401
except ImportError:
    HAS_MPL = False


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A head config folder in the Hub format (json, safetensors, README.md, png)."""
    folder = tmp_path_factory.mktemp("heads")
    write_hub_folder(make_config(), folder, reference=REPO)
    return folder


# ------------------------------------------------------------------- local paths vs repo ids
def test_local_folder_wins_and_paths_are_never_repo_ids(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(saved.parent)
    assert HeadConfig.from_pretrained(saved.name).model_id == "someorg/tiny-text"  # relative, repo-id-like name
    with pytest.raises(FileNotFoundError, match="not a Hub repo id"):
        HeadConfig.from_pretrained(str(tmp_path / "missing" / "deeper"))
    with pytest.raises(FileNotFoundError, match="found the file"):
        HeadConfig.from_pretrained(saved / CONFIG_NAME)
    nested = tmp_path / "outer"
    shutil.copytree(saved, nested / "inner")
    assert HeadConfig.from_pretrained(nested, subfolder="inner").num_layers == LAYERS
    with pytest.raises(FileNotFoundError, match="no subfolder 'other'"):
        HeadConfig.from_pretrained(nested, subfolder="other")


# ---------------------------------------------------------------------- offline HF cache
def test_load_by_repo_id_from_the_offline_cache(saved, offline_cache):
    populate_cache(offline_cache, REPO, saved, COMMIT, refs=("main",))
    other = make_config(seed=5, model_revision="def5678")
    other_dir = offline_cache.parent / "v2"
    other.save_pretrained(other_dir)
    populate_cache(offline_cache, REPO, other_dir, COMMIT_2, refs=("v2",))

    main = HeadConfig.from_pretrained(REPO)
    assert torch.equal(main.scores, make_config().scores) and main.model_revision == "abc1234"
    assert HeadConfig.from_pretrained(REPO, revision="v2").model_revision == "def5678"
    assert HeadConfig.from_pretrained(REPO, revision=COMMIT_2).model_revision == "def5678"
    assert HeadConfig.from_pretrained(REPO, revision=COMMIT, local_files_only=True).model_revision == "abc1234"
    with pytest.raises(LocalEntryNotFoundError):
        HeadConfig.from_pretrained("someorg/not-cached")
    with pytest.raises(LocalEntryNotFoundError):
        HeadConfig.from_pretrained(REPO, revision="v3")


def test_cache_dir_argument(saved, tmp_path):
    populate_cache(tmp_path, REPO, saved)
    cfg = HeadConfig.from_pretrained(REPO, cache_dir=tmp_path, local_files_only=True)
    assert cfg.num_kv_heads == HKV


def test_repo_that_is_not_a_head_config(tmp_path, offline_cache):
    (tmp_path / "README.md").write_text("# a model repo\n")
    populate_cache(offline_cache, "someorg/a-model", tmp_path)
    with pytest.raises(FileNotFoundError, match="has no head_config.json: it is not a core-attn head config repo"):
        HeadConfig.from_pretrained("someorg/a-model")
    make_config().save_pretrained(tmp_path)
    (tmp_path / SCORES_NAME).unlink()
    populate_cache(offline_cache, "someorg/half", tmp_path)
    with pytest.raises(FileNotFoundError, match="head_scores.safetensors is missing"):
        HeadConfig.from_pretrained("someorg/half")


def test_subfolder_in_a_repo(saved, tmp_path, offline_cache):
    populate_cache(offline_cache, "someorg/many", saved)  # files at the root ...
    snapshot = offline_cache / "models--someorg--many" / "snapshots" / COMMIT
    shutil.copytree(saved, snapshot / "qwen3-vl-8b")  # ... and in a subfolder
    assert HeadConfig.from_pretrained("someorg/many", subfolder="qwen3-vl-8b").num_layers == LAYERS
    assert resolve_folder("someorg/many", subfolder="qwen3-vl-8b").endswith("qwen3-vl-8b")


def test_env_vars_offline_mode_in_a_fresh_process(saved, tmp_path):
    """HF_HUB_OFFLINE / HF_HUB_CACHE are read when huggingface_hub is imported: check them for real."""
    cache = tmp_path / "cache"
    populate_cache(cache, REPO, saved)
    script = textwrap.dedent(
        f"""
        import json, sys
        import core_attn
        from core_attn import cli
        from huggingface_hub.errors import LocalEntryNotFoundError
        cfg = core_attn.HeadConfig.from_pretrained({REPO!r})
        try:
            core_attn.HeadConfig.from_pretrained("someorg/never-downloaded")
            missing = "loaded"
        except LocalEntryNotFoundError as e:
            missing = str(e)
        print(json.dumps({{"model_id": cfg.model_id, "missing": missing}}))
        sys.exit(cli.main(["show", {REPO!r}, "--top", "3"]))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.pop("HF_ENDPOINT", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    result = json.loads(first)
    assert result["model_id"] == "someorg/tiny-text"
    assert "HF_HUB_OFFLINE" in result["missing"]
    shown = "\n".join(rest)
    assert f"{REPO} (Hub, revision main)" in shown and "top 3 heads:" in shown
    assert make_config().top_heads(1)[0] in shown


# --------------------------------------------------------------------------- push (patched)
class FakeHub:
    """Stands in for the Hub behind the HfApi methods push_head_config calls; keeps the files."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.files: dict[str, bytes] = {}
        self.uploads: list[dict] = []
        self.branches: list[str] = []
        self.created: list[dict] = []

    def create_repo(self, api, repo_id, **kwargs):
        self.created.append(dict(repo_id=repo_id, **kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, api, repo_id, *, branch, **kwargs):
        self.branches.append(branch)

    def hf_hub_download(self, api, repo_id, filename, **kwargs):
        if filename not in self.files:
            raise RemoteEntryNotFoundError(f"404: {filename}", response=mock.Mock(status_code=404, headers={}))
        path = self.tmp / f"download-{len(self.uploads)}-{filename}"
        path.write_bytes(self.files[filename])
        return str(path)

    def upload_folder(self, api, *, repo_id, folder_path, **kwargs):
        names = sorted(os.listdir(folder_path))
        contents = {n: Path(folder_path, n).read_bytes() for n in names}
        self.uploads.append(dict(repo_id=repo_id, names=names, **kwargs))
        self.files.update(contents)
        oid = f"{len(self.uploads):040x}"
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
            commit_message=kwargs.get("commit_message") or "",
            commit_description="",
            oid=oid,
            pr_url=f"https://huggingface.co/{repo_id}/discussions/1" if kwargs.get("create_pr") else None,
        )

    def card(self) -> str:
        return self.files["README.md"].decode()


@pytest.fixture
def hub(tmp_path):
    fake = FakeHub(tmp_path)
    with mock.patch.multiple(
        HfApi,
        create_repo=mock.DEFAULT,
        create_branch=mock.DEFAULT,
        hf_hub_download=mock.DEFAULT,
        upload_folder=mock.DEFAULT,
        autospec=True,
    ) as patched:
        for name, m in patched.items():
            m.side_effect = getattr(fake, name)
        fake.mocks = patched
        yield fake


def test_push_uploads_exactly_the_format_files(hub):
    cfg = make_config()
    info = core_attn.push_head_config(cfg, REPO, private=True)
    assert hub.created == [dict(repo_id=REPO, private=True, exist_ok=True, repo_type="model")]
    assert hub.branches == []
    (up,) = hub.uploads
    expected = sorted(HUB_FILES if HAS_MPL else set(HUB_FILES) - {"head_scores.png"})
    assert up["names"] == expected and up["allow_patterns"] == expected
    assert up["commit_message"] == "Upload core-attn head config for someorg/tiny-text"
    assert (up["repo_id"], up["revision"], up["create_pr"], up["repo_type"]) == (REPO, None, False, "model")
    assert json.loads(hub.files[CONFIG_NAME]) == json.loads(json.dumps(cfg.to_dict()))
    if HAS_MPL:
        assert hub.files["head_scores.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert info.oid == f"{1:040x}" and info.repo_url.repo_id == REPO

    text = hub.card()
    assert text.startswith("---\n")
    meta = text.split("---\n")[1]
    assert "library_name: core-attn" in meta and "base_model: someorg/tiny-text" in meta
    assert all(f"- {t}" in meta for t in card_mod.TAGS)
    assert f'core_attn.attach(model, "{REPO}", dense=0.05)' in text
    assert 'from_pretrained("someorg/tiny-text"' in text
    rows = re.findall(r"^\| (\d+) \| (L\d+H\d+) \|", text, flags=re.M)
    assert [label for _, label in rows] == cfg.top_heads(LAYERS * HQ)  # 12 heads < top_k 20: all listed
    assert ("![ram per layer and q_head](head_scores.png)" in text) == HAS_MPL
    assert "refcocog (12 samples)" in text and "revision `abc1234`" in text


def test_second_push_keeps_user_text_and_metadata(hub):
    core_attn.push_head_config(make_config(seed=0), REPO)
    first = hub.card()
    head, body = first.split("---\n", 2)[1:]
    edited = (
        "---\n" + head + "license: mit\n" + "tags:\n- my-tag\n" + "---\n"
        + "# My notes\n\nWritten by hand, above the block.\n\n" + body
        + "\n## Citation\n\nKeep me too.\n"
    )
    edited = edited.replace("tags:\n- core-attn", "old_tags:\n- core-attn", 1)  # one tags key: the user's
    hub.files["README.md"] = edited.encode()

    newer = make_config(seed=1)
    core_attn.push_head_config(newer, REPO, commit_message="Re-measure")
    second = hub.card()
    assert hub.uploads[-1]["commit_message"] == "Re-measure"
    assert "# My notes\n\nWritten by hand, above the block.\n\n" + BEGIN_MARKER in second
    assert second.rstrip().endswith("## Citation\n\nKeep me too.")
    assert second.count(BEGIN_MARKER) == 1 and second.count(END_MARKER) == 1
    assert "license: mit" in second
    tags = re.search(r"\ntags:\n((?:- .*\n)+)", second).group(1).split("\n")
    assert tags[0] == "- my-tag" and all(f"- {t}" in tags for t in card_mod.TAGS)
    assert f"| 1 | {newer.top_heads(1)[0]} |" in second
    # a third push of the same config changes nothing
    core_attn.push_head_config(newer, REPO, commit_message="Re-measure")
    assert hub.card() == second


def test_push_to_a_branch_or_a_pr(hub):
    cfg = make_config()
    cfg.push_to_hub(REPO, revision="v2", create_pr=True)
    assert hub.branches == ["v2"]
    assert hub.uploads[-1]["revision"] == "v2" and hub.uploads[-1]["create_pr"] is True
    core_attn.push_head_config(cfg, REPO, revision="refs/pr/1")
    assert hub.branches == ["v2"]  # no branch created for a PR ref


def test_push_refuses_a_card_with_broken_markers(hub):
    hub.files["README.md"] = f"# Mine\n{BEGIN_MARKER}\nno end marker\n".encode()
    with pytest.raises(ValueError, match="expected one of each"):
        core_attn.push_head_config(make_config(), REPO)
    assert hub.uploads == []


def test_push_a_folder_uses_its_card_for_a_new_repo(hub, tmp_path):
    folder = tmp_path / "measured"
    make_config().save_pretrained(folder)
    (folder / "README.md").write_text("# Measured on our cluster\n")
    core_attn.push_head_config(folder, REPO, heatmap=False)
    assert hub.uploads[0]["names"] == sorted([CONFIG_NAME, SCORES_NAME, "README.md"])
    assert "# Measured on our cluster\n\n" + BEGIN_MARKER in hub.card()
    assert "head_scores.png" not in hub.card()
    with pytest.raises(TypeError, match="HeadConfig or a local head config folder"):
        core_attn.push_head_config(str(tmp_path / "nope"), REPO)


def test_cli_push(hub, saved, capsys):
    assert cli.main(["push", str(saved), REPO, "--private", "--revision", "dev", "--no-heatmap"]) == 0
    out = capsys.readouterr().out
    assert f"pushed {saved} -> {REPO}" in out and f"/commit/{1:040x}" in out
    assert hub.created[0]["private"] is True and hub.branches == ["dev"]
    entry = json.loads(out.split("under \"models\"):\n", 1)[1])
    assert entry == {"someorg/tiny-text": {"how": "core-attn extract", "method": "ram", "repo_id": REPO,
                                          "revision": f"{1:040x}"}}
    with pytest.raises(SystemExit, match="no head config folder"):
        cli.main(["push", str(saved / "nope"), REPO])


# ---------------------------------------------------------------------------------- card
def test_card_without_markers_appends_the_block_after_user_text():
    user = "---\nlicense: apache-2.0\nbase_model: someorg/finetuned\n---\n\n# Hand-written\n\nHello.\n"
    text = render_card(make_config(), existing=user, reference=REPO)
    assert text.index("# Hand-written\n\nHello.\n") < text.index(BEGIN_MARKER)
    assert "base_model: someorg/finetuned" in text and "base_model: someorg/tiny-text" not in text
    assert render_card(make_config(), existing=text, reference=REPO) == text  # idempotent


def test_card_for_an_unnamed_or_local_model():
    text = render_card(make_config(model_id="/data/ckpt", model_revision=None, provenance={}), heatmap=None)
    assert "base_model" not in text and "`/data/ckpt`" in text
    assert "core_attn.attach(model, dense=0.05)" in text and "## Provenance" not in text and "![" not in text
    with pytest.raises(ValueError, match="markers"):
        render_card(make_config(), existing=f"{END_MARKER}\n{BEGIN_MARKER}\n")


# ------------------------------------------------------------------- index and attach()
def _write_index(folder: Path, models: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").write_text(json.dumps({"format_version": "1.0", "models": models}))
    return folder / "index.json"


def test_bundled_index_and_tiny_ranking_fit_the_tiny_model():
    from core_attn.testing.tiny_models import tiny_config

    index = registry.load_index()
    assert "tiny-qwen3_vl" in index
    entry = index["tiny-qwen3_vl"]
    assert entry.method == "planted" and entry.path == registry.bundled_dir() / "tiny-qwen3_vl"
    cfg = entry.load()
    text = tiny_config("qwen3_vl").get_text_config(decoder=True)
    assert (cfg.num_layers, cfg.num_q_heads, cfg.num_kv_heads) == (
        text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads)
    assert cfg.provenance["measured"] is False and cfg.metric == "planted"
    for e in index.values():  # no entry may claim a ranking that is not there
        assert e.path is None or (e.path / CONFIG_NAME).is_file()


def test_attach_resolves_the_bundled_ranking_by_model_name():
    from core_attn.testing.tiny_models import build_tiny_model

    model = build_tiny_model("qwen3_vl")
    model.config._name_or_path = "tiny-qwen3_vl"
    mask = core_attn.attach(model, dense=3)
    bundled = HeadConfig.from_pretrained(registry.bundled_dir() / "tiny-qwen3_vl")
    assert torch.equal(mask, bundled.dense_mask(3))
    assert core_attn.attached_settings(model)["model_id"] == "tiny-qwen3_vl"
    assert core_attn.attached_settings(model)["sink_size"] == bundled.sink_size


def test_attach_without_a_known_ranking_says_how_to_get_one():
    model = tiny_text_model("someorg/unknown-model")
    with pytest.raises(ValueError) as err:
        core_attn.attach(model, dense=0.1)
    msg = str(err.value)
    assert "head config" in msg and "'someorg/unknown-model'" in msg
    assert "core-attn extract --model someorg/unknown-model" in msg and 'attach(model, "org/name"' in msg


def test_attach_by_repo_id(saved, offline_cache):
    populate_cache(offline_cache, REPO, saved)
    model = tiny_text_model()
    mask = core_attn.attach(model, REPO, dense=2)
    assert torch.equal(mask, make_config().dense_mask(2))


def test_attach_refuses_a_repo_measured_on_another_model(offline_cache, tmp_path):
    other = make_config(layers=5, model_id="Qwen/Qwen3-VL-8B-Instruct", dataset_scores={})
    other.save_pretrained(tmp_path / "other")
    populate_cache(offline_cache, "someorg/qwen3-vl-8b-core-heads", tmp_path / "other")
    model = tiny_text_model("someorg/tiny-text")
    for source in ("someorg/qwen3-vl-8b-core-heads", tmp_path / "other"):
        with pytest.raises(ValueError, match=r"Qwen/Qwen3-VL-8B-Instruct.*5 layers.*someorg/tiny-text.*has 3"):
            core_attn.attach(model, source, dense=0.1)


def test_index_entry_pointing_to_a_hub_repo(saved, offline_cache, tmp_path, monkeypatch):
    populate_cache(offline_cache, REPO, saved, COMMIT, refs=())  # reachable only by its commit
    index_dir = tmp_path / "bundled"
    _write_index(index_dir, {"someorg/tiny-text": {"repo_id": REPO, "revision": COMMIT, "method": "ram",
                                                  "how": "core-attn extract ..."}})
    monkeypatch.setattr(registry, "bundled_dir", lambda: index_dir)
    model = tiny_text_model()
    assert torch.equal(core_attn.attach(model, dense=0.25), make_config().dense_mask(0.25))
    assert registry.load_index()["someorg/tiny-text"].source == f"{REPO}@{COMMIT}"


def test_index_matches_local_copies_but_not_other_hub_models(tmp_path):
    index = registry.load_index(_write_index(tmp_path, {
        "Qwen/Qwen3-VL-8B-Instruct": {"repo_id": "a/b", "method": "ram", "how": "x"},
        "tiny-qwen3_vl": {"path": "tiny", "method": "planted", "how": "y"},
    }))
    qwen = index["Qwen/Qwen3-VL-8B-Instruct"]
    cache_path = "/home/u/.cache/huggingface/hub/models--Qwen--Qwen3-VL-8B-Instruct/snapshots/" + COMMIT
    assert registry.find_entry([cache_path], index) is qwen
    assert registry.find_entry(["/models/qwen3-vl-8b-instruct/"], index) is qwen
    assert registry.find_entry(["someone/Qwen3-VL-8B-Instruct"], index) is None  # another Hub model
    assert registry.find_entry(["", "tiny-qwen3_vl"], index) is index["tiny-qwen3_vl"]
    assert registry.find_entry(["nothing/here"], index) is None


BAD_INDEX = {
    "both": ({"m": {"path": "a", "repo_id": "a/b", "method": "ram", "how": "x"}}, "exactly one of 'path'"),
    "neither": ({"m": {"method": "ram", "how": "x"}}, "exactly one of 'path'"),
    "no_method": ({"m": {"path": "a", "how": "x"}}, "non-empty string 'method'"),
    "no_how": ({"m": {"path": "a", "method": "ram"}}, "non-empty string 'how'"),
    "escape": ({"m": {"path": "../a", "method": "ram", "how": "x"}}, "must be a folder inside"),
    "absolute": ({"m": {"path": "/etc", "method": "ram", "how": "x"}}, "must be a folder inside"),
    "unknown_key": ({"m": {"path": "a", "method": "ram", "how": "x", "scores": [1]}}, r"unknown keys \['scores'\]"),
    "not_object": ({"m": ["a"]}, "must be a JSON object"),
    "revision_int": ({"m": {"repo_id": "a/b", "revision": 3, "method": "ram", "how": "x"}}, "'revision' must be"),
}


@pytest.mark.parametrize("case", list(BAD_INDEX), ids=list(BAD_INDEX))
def test_bad_index_entries(tmp_path, case):
    models, msg = BAD_INDEX[case]
    with pytest.raises(ValueError, match=msg):
        registry.load_index(_write_index(tmp_path, models))


def test_index_format_errors(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"format_version": "2.0", "models": {}}))
    with pytest.raises(ValueError, match="format_version 2.0.*upgrade core-attn"):
        registry.load_index(tmp_path / "index.json")
    (tmp_path / "index.json").write_text("[]")
    with pytest.raises(ValueError, match="'models' object"):
        registry.load_index(tmp_path / "index.json")


# ------------------------------------------------------------------- bundled data, show
def test_bundled_folder_regenerates_identically(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_bundled", registry.bundled_dir() / "build_bundled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path)
    shipped = registry.bundled_dir() / "tiny-qwen3_vl"
    for name in (CONFIG_NAME, "README.md"):
        assert (tmp_path / "tiny-qwen3_vl" / name).read_text() == (shipped / name).read_text(), name
    from safetensors.torch import load_file

    assert load_file(tmp_path / "tiny-qwen3_vl" / SCORES_NAME).keys() == load_file(shipped / SCORES_NAME).keys()
    assert torch.equal(load_file(tmp_path / "tiny-qwen3_vl" / SCORES_NAME)["scores"],
                       load_file(shipped / SCORES_NAME)["scores"])
    shipped_index = json.loads((registry.bundled_dir() / "index.json").read_text())
    assert json.loads((tmp_path / "index.json").read_text())["models"]["tiny-qwen3_vl"] == \
        shipped_index["models"]["tiny-qwen3_vl"]


def test_package_data_globs_cover_the_bundled_files():
    import fnmatch

    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["core_attn"]
    bundled = registry.bundled_dir()
    files = [p.relative_to(bundled.parent).as_posix() for p in bundled.rglob("*") if p.is_file()]
    files = [f for f in files if not f.endswith(".py") and "__pycache__" not in f]
    assert "head_configs/index.json" in files and "head_configs/tiny-qwen3_vl/head_config.json" in files
    missed = [f for f in files if not any(fnmatch.fnmatchcase(f, p) and f.count("/") == p.count("/")
                                          for p in patterns)]
    assert missed == []


def test_cli_show(saved, capsys):
    assert cli.main(["show", str(saved), "--top", "4"]) == 0
    out = capsys.readouterr().out
    cfg = make_config()
    assert f"head config : {saved}" in out and "model       : someorg/tiny-text @ abc1234" in out
    assert f"{LAYERS} layers x {HQ} q_heads ({HKV} kv_heads)" in out
    assert "mmdocir (5 samples), refcocog (12 samples)" in out and "format 1.1" in out
    assert re.findall(r"^\s+\d+\s+(L\d+H\d+)", out, flags=re.M) == cfg.top_heads(4)
    assert cli.main(["show", "tiny-qwen3_vl", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "published ranking of tiny-qwen3_vl (planted)" in out and "L2H1" in out
    assert cli.main(["show", "--list"]) == 0
    assert "tiny-qwen3_vl" in capsys.readouterr().out


# ------------------------------------------------------------ real HTTP against a local server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_http_round_trip_against_a_local_hub_server(tmp_path):
    """hf download through a Hub-compatible server (olah, read-only) on 127.0.0.1."""
    if shutil.which("olah-cli") is None or shutil.which("git") is None:
        pytest.skip("needs olah (pip install olah) and git for the local Hub server")
    repo = tmp_path / "mirrors" / "models" / "someorg" / "served"
    write_hub_folder(make_config(), repo, reference="someorg/served")
    (repo / "weights.bin").write_bytes(b"pickle would live here")  # must never be downloaded
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "v1")
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    make_config(seed=3, model_revision="later").save_pretrained(repo)
    _git(repo, "commit", "-qam", "v2")
    port = _free_port()
    (tmp_path / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{tmp_path / "olah-repos"}"\n'
        f'mirrors-path = ["{tmp_path / "mirrors"}"]\n[accessibility]\noffline = true\n'
    )
    server = subprocess.Popen(["olah-cli", "-c", str(tmp_path / "olah.toml")], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.skip("the local Hub server did not start")
                time.sleep(0.2)
        script = textwrap.dedent(
            f"""
            import json, os
            import core_attn
            from core_attn.heads.hub import download_head_config
            latest = core_attn.HeadConfig.from_pretrained("someorg/served")
            old = core_attn.HeadConfig.from_pretrained("someorg/served", revision={first!r})
            folder = download_head_config("someorg/served", include_card=True)
            snapshots = os.path.dirname(folder)
            files = sorted({{f for d in os.listdir(snapshots) for f in os.listdir(os.path.join(snapshots, d))}})
            print(json.dumps(dict(latest=latest.model_revision, old=old.model_revision, files=files)))
            """
        )
        env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_CACHE=str(tmp_path / "cache"),
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")
        env.pop("HF_HUB_OFFLINE", None)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["latest"] == "later" and result["old"] == "abc1234"
        assert result["files"] == sorted(HUB_FILES if HAS_MPL else set(HUB_FILES) - {"head_scores.png"})
    finally:
        server.terminate()
        server.wait(timeout=30)
