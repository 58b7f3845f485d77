"""Fixtures of the head config tests."""

import pytest


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that huggingface_hub uses, in offline mode, for this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
