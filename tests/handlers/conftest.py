"""A tiny calibrated SQUID saved as the bundle saves it, shared by the MLflow tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from squid_monai.loading import build_scorer, save_network_config
from squid_monai.scoring import calibrate

SIZE = 32  # image size of the "tiny" preset


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A calibrated tiny SQUID (``model.pt`` + ``network.json``), made once per session."""
    torch.manual_seed(0)
    scorer = build_scorer("tiny")
    calibrate(scorer, [torch.rand(4, 1, SIZE, SIZE), torch.rand(4, 1, SIZE, SIZE)])
    scorer.threshold.fill_(0.5)
    folder = tmp_path_factory.mktemp("model")
    torch.save(scorer.state_dict(), folder / "model.pt")
    save_network_config(folder / "network.json", "tiny")
    return folder
