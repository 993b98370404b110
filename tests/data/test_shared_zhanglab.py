"""The ZhangLab builder on ../shared/data/zhanglab224 (skipped when absent): the paper's split."""

from squid_monai.data import build_zhanglab, make_dataset

SIZE = 128


def test_zhanglab224_gives_the_paper_split(shared_data):
    datalist = build_zhanglab(shared_data / "zhanglab224", seed=0)
    train, val = datalist["training"], datalist["validation"]
    assert len(train) == 1241 and all(it["label"] == 0 for it in train)
    assert sum(it["label"] == 0 for it in val) == 100 and sum(it["label"] == 1 for it in val) == 100
    assert not {it["image"] for it in train} & {it["image"] for it in val}
    assert not {it["patient"] for it in train} & {it["patient"] for it in val}
    assert datalist["test"] == []  # the official test split is not in this folder


def test_zhanglab224_validation_images_preprocess(shared_data):
    datalist = build_zhanglab(shared_data / "zhanglab224", seed=0)
    ds = make_dataset(datalist["validation"][95:105], image_size=SIZE, train=False, num_workers=1)
    for i in range(len(ds)):
        image = ds[i]["image"]
        assert image.shape == (1, SIZE, SIZE) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
