"""make_dataset: decode once with caching, fail loudly by default, skip and report on request."""

import pytest
import torch
from monai.data import CacheDataset, DataLoader

import squid_monai.transforms.loading as loading
from squid_monai.data import SkipBadItems, make_dataset, read_skip_report
from squid_monai.transforms import RadiographError

SIZE = 16


@pytest.fixture
def items(tmp_path, write_image):
    good = [
        {"image": str(write_image(tmp_path / f"g{i}.png", seed=i)), "label": 0} for i in range(4)
    ]
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(write_image(tmp_path / "full.png", seed=9, size=64).read_bytes()[:60])
    flat = tmp_path / "flat.png"
    flat.write_bytes(b"")
    bad = [{"image": str(truncated), "label": 0}, {"image": str(flat), "label": 0}]
    return good[:2] + bad[:1] + good[2:] + bad[1:]  # bad items at positions 2 and 5


def test_cache_decodes_each_file_once_and_augments_every_time(items, monkeypatch):
    good = [it for it in items if it["image"].rsplit("/", 1)[-1].startswith("g")]
    calls = []
    real = loading.read_radiograph
    monkeypatch.setattr(
        loading, "read_radiograph", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    ds = make_dataset(good, image_size=SIZE, train=True, num_workers=1)
    assert isinstance(ds, CacheDataset) and len(calls) == len(good)
    first, second = ds[0]["image"], ds[0]["image"]
    assert len(calls) == len(good)  # no decoding at access time
    assert first.shape == (1, SIZE, SIZE) and not torch.equal(first, second)  # fresh augmentation


def test_bad_item_stops_a_run_with_the_file_named(items):
    with pytest.raises(Exception) as info:
        make_dataset(items, image_size=SIZE, train=True, num_workers=1)
    assert "cut.png" in "".join(str(e) for e in (info.value, info.value.__cause__) if e)
    ds = make_dataset(items, image_size=SIZE, train=False, cache=False)
    with pytest.raises(RuntimeError) as info:
        ds[2]
    assert isinstance(info.value.__cause__, RadiographError) and "cut.png" in str(
        info.value.__cause__
    )


@pytest.mark.parametrize("cache", [True, False])
def test_skip_bad_items_reports_and_returns_next_good(items, tmp_path, cache):
    report = tmp_path / "skipped.jsonl"
    ds = make_dataset(
        items,
        image_size=SIZE,
        train=True,
        cache=cache,
        skip_bad=True,
        report_path=report,
        num_workers=1,
    )
    assert isinstance(ds, SkipBadItems) and len(ds) == len(items)
    images = [ds[i]["image"] for i in range(len(ds))]
    assert all(x.shape == (1, SIZE, SIZE) for x in images)
    names = [x.meta["filename_or_obj"].rsplit("/", 1)[-1] for x in images]
    assert names == ["g0.png", "g1.png", "g2.png", "g2.png", "g3.png", "g0.png"]
    assert [p.rsplit("/", 1)[-1] for p in ds.skipped_files] == ["cut.png", "flat.png"]
    reasons = read_skip_report(report)
    assert sorted(p.rsplit("/", 1)[-1] for p in reasons) == ["cut.png", "flat.png"]
    assert any("empty file" in r for r in reasons.values())
    assert len(report.read_text().splitlines()) == 2  # each file reported once


def test_skip_bad_items_works_across_loader_workers(items, tmp_path):
    report = tmp_path / "skipped.jsonl"
    ds = make_dataset(
        items, image_size=SIZE, train=True, cache=False, skip_bad=True, report_path=report
    )
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert sum(b["image"].shape[0] for b in batches) == len(items)
    assert sorted(p.rsplit("/", 1)[-1] for p in read_skip_report(report)) == ["cut.png", "flat.png"]


def test_other_errors_are_not_swallowed():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise KeyError("a bug, not a bad image")

    with pytest.raises(KeyError):
        SkipBadItems(Broken())[0]
