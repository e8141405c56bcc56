"""Write what ``predict`` computed into the run folder: one CSV row per sample (:class:`PredictionWriter`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from typing_extensions import override

#: the columns of ``predictions.csv``, in order; ``top5_*`` hold the k best classes joined by spaces
COLUMNS = ("index", "prediction", "probability", "top5_classes", "top5_probabilities", "target")


class PredictionWriter(BasePredictionWriter):
    """Write each predicted batch to ``<log dir>/predictions.csv`` (rank ``r > 0``: ``predictions_rank<r>.csv``).

    One row per sample, in the order of the prediction data (the test split for the shipped data modules):

    =====================  =============================================================================
    ``index``              the sample's index in the prediction dataset
    ``prediction``         the predicted class, ``argmax`` of the model's logits
    ``probability``        its softmax probability
    ``top5_classes``       the ``k`` most probable classes, best first, separated by spaces (``k = min(5, K)``)
    ``top5_probabilities`` their probabilities, in the same order
    ``target``             the true class where the batch carries one (``(inputs, targets)``), else empty
    =====================  =============================================================================

    The file is written as batches arrive, so nothing is held in memory and an interrupted ``predict`` keeps the
    rows it had. ``pandas.read_csv`` reads it as it is. The module's ``predict_step`` must return logits ``(B, K)``.

    Args:
        output_dir: where to write; ``None`` uses the trainer's log folder (``<run>/predict_K/`` under the CLI).
        top_k: how many classes the ``top5_*`` columns hold at most.
    """

    def __init__(self, output_dir: str | Path | None = None, top_k: int = 5) -> None:
        super().__init__(write_interval="batch")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.top_k = top_k
        self.path: Path | None = None
        self._offset = 0
        self._file: Any = None
        self._writer: Any = None

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = self.output_dir or Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        self.path = folder / ("predictions.csv" if rank == 0 else f"predictions_rank{rank}.csv")
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 (closed at predict end)
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)
        self._offset = 0

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, Tensor) or prediction.ndim != 2:
            raise TypeError(
                f"PredictionWriter needs predict_step to return logits of shape (batch, classes), got "
                f"{type(prediction).__name__} {getattr(prediction, 'shape', '')}."
            )
        probabilities = prediction.detach().float().softmax(dim=-1).cpu()
        top_p, top_c = probabilities.topk(min(self.top_k, probabilities.shape[1]), dim=-1)
        targets = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        targets = targets.cpu().tolist() if isinstance(targets, Tensor) else None
        n = probabilities.shape[0]
        # the sampler's indices under a distributed sampler; otherwise the running position (unshuffled loaders)
        indices = list(batch_indices) if batch_indices else list(range(self._offset, self._offset + n))
        self._offset += n
        for i in range(n):
            self._writer.writerow(
                (
                    indices[i],
                    int(top_c[i, 0]),
                    f"{float(top_p[i, 0]):.6f}",
                    " ".join(str(int(c)) for c in top_c[i]),
                    " ".join(f"{float(p):.6f}" for p in top_p[i]),
                    "" if targets is None else int(targets[i]),
                )
            )

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.on_predict_end(trainer, pl_module)


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``predictions.csv`` back: integer classes and float probabilities (``target`` ``None`` when empty)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append(
                {
                    "index": int(row["index"]),
                    "prediction": int(row["prediction"]),
                    "probability": float(row["probability"]),
                    "top5_classes": [int(c) for c in row["top5_classes"].split()],
                    "top5_probabilities": [float(p) for p in row["top5_probabilities"].split()],
                    "target": int(row["target"]) if row["target"] != "" else None,
                }
            )
    return rows


__all__ = ["COLUMNS", "PredictionWriter", "read_predictions"]
