"""``benchmarks/ablations.py`` (the paper's Tables 2 and 6 over seeds): the runs it would train,
and its paired table from fabricated finished runs."""

import json

import pytest

from .fake_runs import fake_run
from .test_compare import _load

ablations = _load("ablations")


def test_only_table6_trains_the_full_model_and_the_three_appendix_variants(tmp_path, capsys):
    root = tmp_path / "runs"
    assert (
        ablations.main(
            [
                "--output_root",
                str(root),
                "--seeds",
                "0",
                "--only",
                "table6",
                "--dry_run",
                "--",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert [line[2:] for line in out.splitlines() if line.startswith("# ")] == [
        "full_SQUID",
        "convolution_instead_of_transformer",
        "soft_masked_shortcut",
        "pixel_level_in_painting",
    ]
    trainings = [line for line in out.splitlines() if " run training " in line]
    assert len(trainings) == 4 and all("--epochs 1" in t for t in trainings)
    assert "--network_overrides" not in trainings[0]
    assert "--network_overrides \"{'context': 'conv'}\"" in trainings[1]
    assert not root.exists()
    with pytest.raises(SystemExit, match="unknown variant"):
        ablations.selected(["table9"])


def test_paired_differences_per_seed_and_the_papers_direction(tmp_path):
    # the variant is 5 points below the full model on every seed, the other 1 point above on one
    # seed and 1 below on the other: resolved and "yes" against unresolved
    for seed, full in ((0, 0.80), (1, 0.70)):
        fake_run(tmp_path / "full_SQUID" / f"seed{seed}", full)
        fake_run(tmp_path / "no_in_painting_block" / f"seed{seed}", full - 0.05)
        fake_run(
            tmp_path / "no_decoder_memory" / f"seed{seed}", full + (0.01 if seed == 0 else -0.01)
        )
    only = ["--only", "no in-painting block", "no decoder memory"]
    assert (
        ablations.main(["--output_root", str(tmp_path), "--seeds", "0", "1", *only, "--collect"])
        == 0
    )
    result = json.loads((tmp_path / "ablations.json").read_text())
    full, inpaint, decoder = result["variants"]
    assert full["vs_full"] == {"test": None}
    assert (
        inpaint["vs_full"]["test"]["mean"] == pytest.approx(-0.05)
        and inpaint["vs_full"]["test"]["resolved"]
    )
    assert (
        decoder["vs_full"]["test"]["mean"] == pytest.approx(0.0)
        and not decoder["vs_full"]["test"]["resolved"]
    )
    table = (tmp_path / "ablations.md").read_text()
    assert (
        "| no in-painting block | `{'inpainting': False}` | 2 | 80.9 | 2 | 70.0 +- 7.1 |" in table
    )
    assert "| -5.0 +- 0.0 | yes |" in table and "| +0.0 +- 1.4 | **no** (n.s.) |" in table
    assert "python -m benchmarks.ablations" in table and "--collect" in table
