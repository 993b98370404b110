"""``benchmarks/report.py``: a re-run rewrites only its own section's generated block."""

from .test_compare import _load

report = _load("report")


def test_a_rerun_replaces_the_generated_block_and_keeps_the_prose_and_other_sections(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    report.write_section("## Study", "| a |\n|---|\n| 1 |", path)
    first = path.read_text()
    assert first.startswith("# Benchmarks\n\n## Other\n\nkept\n\n## Study\n\n" + report.BEGIN)
    assert "| 1 |" in first and first.endswith(report.END + "\n")

    # a person writes provenance above and a reading below the generated block
    path.write_text(
        first.replace("## Study\n\n", "## Study\n\nTrained in session 7.\n\n")
        + "\nReading: one row.\n\n## Later\n\nalso kept\n"
    )
    report.write_section("## Study", "| a |\n|---|\n| 2 |", path)
    second = path.read_text()
    assert "| 2 |" in second and "| 1 |" not in second
    for kept in (
        "Trained in session 7.",
        "Reading: one row.",
        "## Other\n\nkept",
        "## Later\n\nalso kept",
    ):
        assert kept in second
    assert (
        second.index("Trained in session 7.")
        < second.index("| 2 |")
        < second.index("Reading: one row.")
    )
    assert second.count("## Study") == 1 and second.count(report.BEGIN) == 1


def test_a_section_without_markers_is_replaced_whole(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Study\n\nold table\n\n## Next\n\nkept\n")
    report.write_section("## Study", "new table", path)
    text = path.read_text()
    assert "old table" not in text and "new table" in text and "## Next\n\nkept\n" in text
    assert text.index(report.END) < text.index("## Next")


def test_a_written_study_links_a_copy_of_its_figure_in_docs_and_a_dry_one_its_scratch_file(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(report, "REPO", tmp_path / "repo")
    figure = tmp_path / "runs" / "hyperparams.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    assert report.published_figure(figure, "figure9.png", write=False) == f"`{figure}`"
    assert not (tmp_path / "repo").exists()
    link = report.published_figure(figure, "figure9.png", write=True)
    assert (tmp_path / "repo" / "docs" / "figures" / "figure9.png").read_bytes() == b"png"
    assert (
        link.startswith("[`docs/figures/figure9.png`](docs/figures/figure9.png)")
        and str(tmp_path) not in link
    )
