"""Dataset lineage of a training run: the data it used as MLflow datasets (``mlflow.data``),
one per split, each with its source (the datalist file, the image folder, or the generator of
DigitAnatomy), a digest that changes when the split's items change, and its size, so that a
run in the MLflow UI says which images trained and validated its model.

:func:`run_datasets` builds them from the run's data source
(:func:`squid_monai.workflow.choose_data`);
:class:`~squid_monai.handlers.tracking.ResilientMLFlowHandler` logs them (``mlflow.log_input``'s
client form, with the split as the input's context) when its run starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["SIZE_TAG", "SPLITS", "run_datasets", "split_dataset"]

#: the splits a datalist may hold, in the order they are logged
SPLITS = ("training", "validation", "report", "test")
#: input tag with the number of items of the split
SIZE_TAG = "size"


def split_dataset(items: list[dict], source: str, name: str):
    """One split as an ``mlflow.data`` pandas dataset: columns ``image`` (the path) and
    ``label``, the digest MLflow's own (of the rows), the source a local path or URI."""
    import mlflow
    import pandas as pd

    frame = pd.DataFrame(
        {
            "image": [str(it.get("image", "")) for it in items],
            "label": [int(it.get("label", 0)) for it in items],
        }
    )
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": local file, both times
        warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
        return mlflow.data.from_pandas(frame, source=source, name=name, targets="label")


def _generated(name: str, split: str, tags: Mapping[str, Any]):
    """A generated split (no files): its source is the generator and its settings."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    return MetaDataset(
        CodeDatasetSource(tags={k: str(v) for k, v in tags.items()}), name=f"{name}:{split}"
    )


def run_datasets(
    data, training_size: int = 0, val_per_class: int = 0
) -> dict[str, tuple[Any, int]]:
    """``{split: (mlflow dataset, size)}`` of a run's data source. A datalist or folder
    (``data.splits``): each non-empty split, the source ``data.origin``. DigitAnatomy
    (generated): the training split of ``training_size`` images and the validation split of
    ``val_per_class`` normal and abnormal images, the source the generator and its seed."""
    origin = str(getattr(data, "origin", "") or "")
    if data.splits is None:
        tags = {"generator": "squid_monai.data.digitanatomy", "seed": data.seed}
        sizes = {"training": int(training_size), "validation": 2 * int(val_per_class)}
        return {
            split: (_generated(data.name, split, {**tags, "split": split}), n)
            for split, n in sizes.items()
        }
    name = origin.rstrip("/").rsplit("/", 1)[-1] or data.name
    return {
        split: (split_dataset(items, origin or data.name, f"{name}:{split}"), len(items))
        for split in SPLITS
        if (items := data.splits.get(split))
    }
