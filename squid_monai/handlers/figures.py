"""The figures of every validation: ROC curve and input / reconstruction / difference grid,
written under the output folder and logged to the tracking run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler
from monai.utils import evenly_divisible_all_gather

from ..distributed import is_main_process
from ..scoring import difference_map
from .tracking import ResilientMLFlowHandler

__all__ = ["ValidationArtifacts"]

logger = logging.getLogger(__name__)


class ValidationArtifacts:
    """At the end of each validation, a ROC curve and an input / student reconstruction /
    |difference| grid (up to ``max_images`` columns, normals then abnormals) in
    ``<output_dir>/epoch_<trainer epoch>/``, also logged to the tracking run under
    ``<artifact_path>/epoch_<n>/``.

    Attach to the validation evaluator: its ``state.epoch`` is the trainer's epoch when
    the trainer's validation handler runs it. Reads batch tensors (``decollate=False``) from
    ``engine.state.output``. Under ``torch.distributed`` attach it on every rank: scores
    and labels are gathered (a collective), only rank 0 writes and logs. A figure that
    cannot be drawn (e.g. one class only) is skipped with a warning, never an error.

    Args:
        mlflow_handler: the run to log to (a :class:`ResilientMLFlowHandler` or MONAI's);
            None or disabled: files are only written. The epoch's folder is logged with
            MLflow's ``log_artifacts``.
        output_dir: folder of the ``epoch_<n>`` folders.
        score_key, label_key, image_key, reconstruction_key: keys of the output.
        max_images: columns of the grid.
        artifact_path: folder of the figures inside the run's artifacts.
    """

    def __init__(
        self,
        mlflow_handler: MLFlowHandler | None,
        output_dir: str | os.PathLike,
        score_key: str = "score",
        label_key: str = "label",
        image_key: str = "image",
        reconstruction_key: str = "reconstruction",
        max_images: int = 8,
        artifact_path: str = "validation",
    ):
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.mlflow_handler, self.output_dir = mlflow_handler, Path(output_dir)
        self.keys = (score_key, label_key, image_key, reconstruction_key)
        self.max_images, self.artifact_path = max_images, artifact_path
        self._warned: set[str] = set()
        self._reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine | None = None) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        # (image, reconstruction) pairs kept per class, at most max_images each
        self._examples: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {0: [], 1: []}

    def _warn_once(self, what: str, err: BaseException | str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning("validation figures: %s skipped (%s)", what, err)

    def _collect(self, engine: Engine) -> None:
        out = _batch_output(engine.state.output)
        score_key, label_key, image_key, rec_key = self.keys
        if score_key not in out or label_key not in out:
            self._warn_once(
                "all figures", f"the evaluator output has no {score_key!r} / {label_key!r}"
            )
            return
        score = torch.as_tensor(out[score_key]).detach().reshape(-1).float().cpu()
        label = torch.as_tensor(out[label_key]).detach().reshape(-1).long().cpu()
        self._scores.append(score)
        self._labels.append(label)
        if image_key not in out or rec_key not in out:
            return
        image, rec = out[image_key], out[rec_key]
        for cls, kept in self._examples.items():
            for i in (
                torch.nonzero(label == cls).reshape(-1).tolist()[: self.max_images - len(kept)]
            ):
                kept.append((image[i].detach().float().cpu(), rec[i].detach().float().cpu()))

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.cat(self._scores) if self._scores else torch.zeros(0)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if dist.get_backend() == "nccl"
                else "cpu"
            )
            scores = evenly_divisible_all_gather(scores.to(device), concat=True).cpu()
            labels = evenly_divisible_all_gather(labels.to(device), concat=True).cpu()
        return scores, labels

    def _write(self, engine: Engine) -> None:
        from squid_monai import visualize  # matplotlib only when figures are drawn

        scores, labels = self._gathered()
        if not is_main_process():
            return
        folder = self.output_dir / f"epoch_{engine.state.epoch}"
        written = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._warn_once("all figures", err)
            return
        try:
            written.append(
                visualize.plot_roc(
                    labels,
                    scores,
                    folder / "roc.png",
                    title=f"validation ROC, epoch {engine.state.epoch}",
                )
            )
        except Exception as err:  # noqa: BLE001 - a figure never stops training
            self._warn_once("ROC curve", err)
        try:
            written.append(self._grid(folder / "reconstructions.png"))
        except Exception as err:  # noqa: BLE001
            self._warn_once("reconstruction grid", err)
        if any(p is not None for p in written):
            self._log(folder, f"{self.artifact_path}/{folder.name}")

    def _grid(self, path: Path) -> Path | None:
        from squid_monai import visualize

        normals, abnormals = self._examples[0], self._examples[1]
        if not normals and not abnormals:
            self._warn_once(
                "reconstruction grid", "the evaluator output has no image / reconstruction"
            )
            return None
        n = self.max_images
        n_abn = min(len(abnormals), max(n // 2, n - len(normals)))
        n_norm = min(len(normals), n - n_abn)
        chosen = normals[:n_norm] + abnormals[:n_abn]
        image = torch.stack([c[0] for c in chosen])
        rec = torch.stack([c[1] for c in chosen]).to(image)
        return visualize.image_grid(
            [image, rec, difference_map(image, rec)],
            ["input", "reconstruction", "|difference|"],  # columns: normals first, then abnormals
            path,
            max_images=n,
            value_ranges=[(0.0, 1.0), (0.0, 1.0), None],
        )

    def _log(self, folder: Path, artifact_path: str) -> None:
        handler = self.mlflow_handler
        run = getattr(handler, "cur_run", None)
        if handler is None or getattr(handler, "disabled", False) or run is None:
            return
        try:
            handler.client.log_artifacts(run.info.run_id, str(folder), artifact_path=artifact_path)
        except Exception as err:  # noqa: BLE001 - a figure never stops training
            if isinstance(handler, ResilientMLFlowHandler):
                handler.disable(err, "logging the validation figures")
            else:
                self._warn_once("MLflow artifact logging", err)


def _batch_output(output: Any) -> dict[str, Any]:
    """``engine.state.output`` as a dict of batch tensors (stacks a decollated list)."""
    if isinstance(output, dict):
        return output
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        keys = set.intersection(*(set(o) for o in output))
        return {k: torch.stack([torch.as_tensor(o[k]) for o in output]) for k in keys}
    return {}
