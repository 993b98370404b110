"""``inference.json`` has MONAI's bundle inference shape: the properties MONAI checks, and the
pieces (preprocessing, dataset, inferer, evaluator, writer handler) are the package's."""

from __future__ import annotations

from monai.bundle import ConfigWorkflow

from squid_monai.inference import ScoringEvaluator
from squid_monai.scoring import PerImageInferer, ScoreWriterHandler, ScoringItems

from ..trained_bundle import CONFIGS


def test_inference_config_passes_monai_property_check(tmp_path):
    import torch

    from squid_monai.artifact import MODELS_DIR, WEIGHTS_FILE, Recipe
    from squid_monai.loading import build_scorer, save_network_config

    save_network_config(tmp_path / MODELS_DIR, Recipe("tiny"))  # an (untrained) model folder
    torch.save(build_scorer("tiny").state_dict(), tmp_path / MODELS_DIR / WEIGHTS_FILE)
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        output_dir=str(tmp_path),
        preset="tiny",
        input=[],
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    parser = workflow.parser
    for key in (
        "preprocessing",
        "dataset",
        "evaluator",
        "inferer",
        "handlers",
        "network_def",
        "bundle_root",
        "device",
        "dataset_dir",
    ):
        assert key in parser.config, key
    assert isinstance(parser.get_parsed_content("inferer"), PerImageInferer)
    assert isinstance(parser.get_parsed_content("writer"), ScoreWriterHandler)
    assert parser.config["dataset"]["_target_"].endswith(ScoringItems.__name__)
    assert parser.config["evaluator"]["_target_"].endswith(ScoringEvaluator.__name__)
    assert parser.config["dataset"]["transform"] == "@preprocessing"
