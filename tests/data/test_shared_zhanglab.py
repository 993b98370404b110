"""The ZhangLab builder on ../shared/data/zhanglab224 (skipped when absent): the paper's split."""

from squid_monai.data import build_zhanglab, make_dataset

SIZE = 128


def test_zhanglab224_gives_the_paper_split(shared_data):
    datalist = build_zhanglab(shared_data / "zhanglab224", seed=0)
    train, val, report = datalist["training"], datalist["validation"], datalist["report"]
    assert len(train) == 1341 - 100 - 100 and all(it["label"] == 0 for it in train)
    for split in (val, report):
        assert (
            sum(it["label"] == 0 for it in split) == 100
            and sum(it["label"] == 1 for it in split) == 100
        )
    for a, b in ((train, val), (train, report), (val, report)):
        assert not {it["image"] for it in a} & {it["image"] for it in b}
        assert not {it["patient"] for it in a} & {it["patient"] for it in b}
    # the validation split of the protocol without the report split: earlier results stay comparable
    without = build_zhanglab(
        shared_data / "zhanglab224", seed=0, n_report_normal=0, n_report_abnormal=0
    )
    assert without["validation"] == val and len(without["training"]) == 1241
    assert datalist["test"] == []  # the official test split is not in this folder


def test_zhanglab224_validation_images_preprocess(shared_data):
    datalist = build_zhanglab(shared_data / "zhanglab224", seed=0)
    ds = make_dataset(datalist["validation"][95:105], image_size=SIZE, train=False, num_workers=1)
    for i in range(len(ds)):
        image = ds[i]["image"]
        assert (
            image.shape == (1, SIZE, SIZE)
            and 0.0 <= float(image.min())
            and float(image.max()) <= 1.0
        )
