"""The decisions the bundle configs delegate to squid_monai.workflow."""

import os

import numpy as np
import pytest
from PIL import Image

from squid_monai.workflow import as_bool, bundle_root, data_splits



@pytest.mark.parametrize("value, expected", [("true", True), ("False", False), ("1", True), ("no", False),
                                             (True, True), (0, False)])
def test_command_line_flags_become_bools(value, expected):
    assert as_bool(value) is expected


def test_an_unclear_flag_is_an_error():
    with pytest.raises(ValueError, match="boolean"):
        as_bool("maybe")


def test_bundle_root_from_repository_root_and_from_inside_the_bundle(monkeypatch, tmp_path):
    repo_bundle = bundle_root()
    assert repo_bundle.endswith(os.path.join("bundles", "squid"))
    monkeypatch.chdir(repo_bundle)
    assert bundle_root() == repo_bundle
    monkeypatch.chdir(tmp_path)  # anywhere else: the checkout's bundle, never the cwd
    assert bundle_root() == repo_bundle


def test_no_data_means_digitanatomy():
    assert data_splits(None, None) is None


def test_folder_dataset_follows_the_paper_protocol(tmp_path):
    for cls, n in (("normal", 10), ("abnormal", 6)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(np.full((8, 8), i * 20 + 5, np.uint8)).save(tmp_path / cls / f"{i}.png")
    splits = data_splits(str(tmp_path), None, seed=1, val_per_class=3, report_per_class=0)
    assert len(splits["validation"]) == 6 and len(splits["training"]) == 7
    assert all(item["label"] == 0 for item in splits["training"])
    assert not {i["image"] for i in splits["training"]} & {i["image"] for i in splits["validation"]}


def test_missing_data_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data_splits(str(tmp_path / "nowhere"), None)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        data_splits(None, str(tmp_path / "missing.json"))
