"""``benchmarks/inference_speed.py`` on a trained model folder: every score source asked for is
timed on every back-end and thread count, eager PyTorch is the reference of each ratio, and the
written section names the model, its score and the thread count."""

from __future__ import annotations

from benchmarks import inference_speed

from .fixtures.model_folders.make_expected import HERE as FOLDERS


def test_trained_model_each_source_threads_and_backend(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text(f"# Benchmarks\n\n{inference_speed.SECTION}\n\nold\n\n## Next\n\nkept\n")
    argv = [
        "--model_dir", str(FOLDERS / "squid"),
        "--model_names", "stored",
        "--score_sources", "tile_residual,logit",
        "--backends", "pytorch", "torchscript",
        "--threads", "1", "2",
        "--batch_sizes", "1", "3",
        "--repeats_batch1", "1", "--repeats", "1", "--warmup", "1",
        "--output", str(output),
    ]  # fmt: skip
    assert inference_speed.main(argv) == 0
    text = output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| stored (")]
    # 2 sources x 2 thread counts x 2 back-ends x 2 batch sizes
    assert len(rows) == 16
    assert sum("| `tile_residual` | 2 | TorchScript | 3 |" in r for r in rows) == 1
    eager = [r for r in rows if "| PyTorch |" in r]
    assert all("| 1.00 | 1.00 | 0.0e+00 |" in r for r in eager)
    assert "random weights" not in text.split(inference_speed.SECTION)[1].split("## Next")[0]
    assert text.endswith("## Next\n\nkept\n")


def test_a_source_the_model_cannot_give_is_refused():
    import pytest

    with pytest.raises(ValueError, match="score_source"):
        inference_speed.model_subjects(FOLDERS / "squid", ["nonsense"])[0].build()
