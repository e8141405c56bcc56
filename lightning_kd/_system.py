"""Shared machinery of the two LightningModules: the training-step statistics, evaluation steps, optimizer wiring.

Checkpoint record and loading: :mod:`lightning_kd._checkpointing` (the base class of :class:`ClassifierSystem`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MaxMetric, Metric
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_kd._checkpointing import RecordedCheckpoints
from lightning_kd._train_stats import TrainStepStats
from lightning_kd._views import apply_views, first_view
from lightning_kd.contracts import ValidationOutput
from lightning_kd.step_runners import EagerRunner, StepResult, StepRunner, select_step_runner

Batch = tuple[Any, Tensor]


def _accuracy(num_classes: int, top_k: int) -> MulticlassAccuracy:
    # micro average = the usual "fraction of samples whose label is in the top-k" (torchmetrics defaults to macro)
    return MulticlassAccuracy(num_classes=num_classes, top_k=min(top_k, num_classes), average="micro")


class SampleMean(Metric):
    """Mean of a per-sample quantity over every sample a process (or, synced, all processes) saw.

    Keeps a sum and a count, both summed across processes when computed, so ranks with different numbers of
    samples are weighted by their counts. (A ``sync_dist=True`` mean of per-rank means is not: Lightning averages
    the per-rank counts in place, which truncates an integer count, e.g. (181 + 180) / 2 -> 180.) An update adds
    two device scalars and never reads a value on the host.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")
        self.total: Tensor
        self.count: Tensor

    def update(self, total: Tensor, count: int) -> None:  # type: ignore[override]
        """Add ``total``, the sum of the quantity over ``count`` samples."""
        self.total += total.detach().to(self.total.dtype)
        self.count += count

    def compute(self) -> Tensor:
        """The sum over the count (NaN before any sample)."""
        return self.total / self.count


def log_global(module: LightningModule, name: str, value: Tensor, **kwargs: Any) -> None:
    """``module.log`` a value that is already the same on every process (reduced, or computed from synced state).

    Lightning asks for ``sync_dist=True`` for every epoch-level tensor under DDP; reducing an already global value
    again is a wasted collective (and a mean of equal values can move its last bit). ``rank_zero_only=True`` turns
    Lightning's sync into a no-op, ``sync_dist=True`` says the value needs none: no collective, no warning. Every
    process still calls this with the same value, so callbacks that monitor it agree across processes.
    """
    module.log(name, value, sync_dist=True, rank_zero_only=True, **kwargs)


class ClassifierSystem(RecordedCheckpoints):
    """Base of :class:`ClassificationModule` and :class:`DistillationModule`.

    Holds the training-step statistics (device-side sums, see :class:`~lightning_kd._train_stats.TrainStepStats`),
    the torchmetrics accuracies of evaluation (top-1/top-5, logged as fractions), the best-so-far validation top-1,
    the evaluation steps and the injected optimizer / scheduler factories (the checkpoint record is its base's,
    :class:`~lightning_kd._checkpointing.RecordedCheckpoints`). Subclasses define :attr:`network` (the model being
    trained and evaluated), :meth:`trainable_parameters` and :meth:`training_terms`.

    With ``cuda_graph=True`` on a CUDA device each training step is one replay of a captured CUDA graph (teacher
    forward, student forward and backward, loss, optimizer update; see :mod:`lightning_kd.cuda_graph`), re-captured
    whenever the learning rate changes and, for an epoch-dependent step (DKD's warm-up, CTKD's schedule), at every
    epoch start; elsewhere the step runs eagerly, with a notice.
    ``channels_last=True`` keeps networks and 4-D inputs in NHWC memory format.

    Training logs, every ``trainer.log_every_n_steps`` steps, the mean of the window's steps as
    ``train/loss_step`` and ``train/<term>_step``, and at each epoch end the exact epoch means
    ``train/loss_epoch``, ``train/<term>_epoch`` and ``train/acc1`` (summed over processes). A non-finite term
    stops training with a :class:`FloatingPointError` that names the epoch and the span of steps.
    """

    def __init__(
        self,
        num_classes: int,
        optimizer: OptimizerCallable,
        lr_scheduler: LRSchedulerCallable | None,
        cuda_graph: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.cuda_graph = bool(cuda_graph)
        self.channels_last = bool(channels_last)
        #: how training steps are executed (chosen at fit setup; eager until then, e.g. for evaluation)
        self.step_runner: StepRunner = EagerRunner(self.channels_last)
        self.train_stats = TrainStepStats()
        self.val_acc1 = _accuracy(num_classes, 1)
        self.val_acc5 = _accuracy(num_classes, 5)
        self.test_acc1 = _accuracy(num_classes, 1)
        self.test_acc5 = _accuracy(num_classes, 5)
        self.val_loss = SampleMean()
        self.test_loss = SampleMean()
        self.val_acc1_best = MaxMetric()
        self.val_acc1_best.persistent(True)  # a resumed run continues the best-so-far, it does not restart it

    @property
    def network(self) -> nn.Module:
        """The network that is trained and evaluated."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters handed to the optimizer."""
        raise NotImplementedError

    def training_terms(
        self, inputs: Any, targets: Tensor, extras: tuple[Tensor, ...] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One training step's math: the logits used for training accuracy and the named, weighted loss terms.

        ``extras`` are the tensors :meth:`step_extras` took from the batch (empty unless a subclass asks for some).
        """
        raise NotImplementedError

    def step_extras(self, batch_extras: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The tensors of a batch beyond ``(inputs, targets)`` that the training step reads (none by default).

        A data module may add elements to training batches (``CIFAR100DataModule(view_keys=True)`` adds view keys);
        what this returns is handed to :meth:`training_terms` as ``extras`` and, under a CUDA graph, copied into
        static buffers like the inputs.
        """
        del batch_extras
        return ()

    # ------------------------------------------------------------------ training

    @override
    def forward(self, x: Tensor) -> Tensor:
        """Logits of the trained network (inference only)."""
        return self.network(x)

    def networks(self) -> list[nn.Module]:
        """Every network of the module (for memory-format conversion)."""
        return [self.network]

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if isinstance(data_classes, int) and data_classes != self.num_classes:
            raise ValueError(
                f"The data module has num_classes={data_classes} but the model was built with "
                f"num_classes={self.num_classes}: build the models for {data_classes} classes."
            )
        if stage == "fit":
            # the trainer is read only for cuda_graph (its device and settings); a module can be set up without one
            self.step_runner = select_step_runner(
                self._trainer, cuda_graph=self.cuda_graph, channels_last=self.channels_last
            )
            if self.step_runner.steps_optimizer:
                self.automatic_optimization = False  # the runner's step holds the optimizer's update
        self.step_runner.prepare_networks(self.networks())

    def invalidate_captured_step(self) -> None:
        """Drop a captured CUDA-graph step (it bakes in the weights and numbers it read); the next step re-captures.

        A no-op when the step runs eagerly. Call it after replacing a tensor the step reads (a new folded teacher).
        """
        self.step_runner.invalidate()

    def epoch_dependent_step(self) -> bool:
        """Whether the training step's math changes with the epoch (a CUDA graph is then re-captured each epoch)."""
        return False

    @override
    def on_train_epoch_start(self) -> None:
        # Lightning >= 2.2 no longer calls .train() at fit start: a network loaded in eval mode would train with
        # frozen BatchNorm statistics.
        self.network.train()
        self.train_stats.reset(self.global_step)
        self.step_runner.on_train_epoch_start(self.epoch_dependent_step())

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, targets, *batch_extras = batch
        extras = self.step_extras(tuple(batch_extras))
        result = self.step_runner.run(self, self.training_terms, inputs, targets, extras)
        self._record_train_step(result, targets.shape[0], batch_idx)
        return result.loss

    def _record_train_step(self, result: StepResult, batch_size: int, batch_idx: int) -> None:
        """Add the step to the device sums; at a window's close, hand its means to the logger (no sync otherwise)."""
        # optimizer steps before this one (Lightning logs at (step + 1) % n == 0); a runner that steps the
        # optimizer itself has had the step counted already
        step = self.global_step - int(self.step_runner.steps_optimizer)
        self.train_stats.add(result.loss, result.terms, result.correct, batch_size=batch_size)
        every = self.trainer.log_every_n_steps
        log_step = every > 0 and (step + 1) % every == 0
        last_step = batch_idx + 1 >= self.trainer.num_training_batches or step + 1 == self.trainer.max_steps
        if log_step or last_step:
            # the check comes before the epoch's checkpoint is written: a non-finite run never saves
            means, _ = self.train_stats.window_means(epoch=self.current_epoch + 1, step=step)
            if log_step:
                for name, value in means.items():
                    self.log(f"train/{name}_step", value, on_step=True, on_epoch=False, prog_bar=name == "loss")

    @override
    def on_validation_epoch_start(self) -> None:
        # with val_check_interval < 1 validation (and checkpointing) can come mid-epoch: check the open window first
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking and not self.train_stats.empty:
            self.train_stats.window_means(epoch=self.current_epoch + 1, step=max(self.global_step - 1, 0))

    @override
    def on_train_epoch_end(self) -> None:
        self.step_runner.on_train_epoch_end(self)
        if self.train_stats.empty:
            return
        sums = self.trainer.strategy.reduce(self.train_stats.epoch_sums(), reduce_op="sum")
        means, accuracy = self.train_stats.means(sums)
        # summed over the processes above: already global
        for name, value in means.items():
            log_global(self, f"train/{name}_epoch", value, on_step=False, on_epoch=True)
        log_global(self, "train/acc1", accuracy, on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ evaluation

    def _evaluate(
        self, batch: Batch, stage: str, acc1: MulticlassAccuracy, acc5: MulticlassAccuracy, loss: SampleMean
    ) -> Tensor:
        inputs, targets = batch
        inputs = self.step_runner.format_inputs(inputs)
        logits = first_view(apply_views(self.network, inputs))
        acc1.update(logits, targets)
        acc5.update(logits, targets)
        n = targets.shape[0]
        # metric objects: their states (counts, sums) are summed across processes at the epoch's end, so under DDP
        # (where the data modules give each evaluation sample to exactly one process) the values are those of one
        # device evaluating the whole split
        loss.update(F.cross_entropy(logits.float(), targets, reduction="sum"), n)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=n)
        self.log(f"{stage}/acc1", acc1, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        self.log(f"{stage}/acc5", acc5, on_epoch=True, batch_size=n)
        return logits

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> ValidationOutput:
        logits = self._evaluate(batch, "val", self.val_acc1, self.val_acc5, self.val_loss)
        return ValidationOutput(student_logits=logits, teacher_logits=None, targets=batch[1])

    @override
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        # val_acc1.compute() reads the accuracy synced across processes: the best-so-far is global too
        self.val_acc1_best.update(self.val_acc1.compute())
        log_global(self, "val/acc1_best", self.val_acc1_best.compute(), prog_bar=True)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc1, self.test_acc5, self.test_loss)

    @override
    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> Tensor:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return first_view(apply_views(self.network, inputs))

    # ------------------------------------------------------------------ optimization

    @override
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(list(self.trainable_parameters()))
        optimizer = self.step_runner.wrap_optimizer(optimizer)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def frozen_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters no optimizer may ever hold (the teacher's); none by default."""
        return iter(())

    @override
    def on_fit_start(self) -> None:
        # Whatever built the optimizers (this module, LightningCLI's top-level --optimizer, a subclass), a frozen
        # parameter must never be in one: weight decay and momentum would still move it.
        frozen = {id(p) for p in self.frozen_parameters()}
        held = sum(
            1 for opt in self.trainer.optimizers for g in opt.param_groups for p in g["params"] if id(p) in frozen
        )
        if held:
            raise ValueError(
                f"The optimizer holds {held} of the teacher's frozen parameters. Configure the optimizer through the "
                "module (`--model.init_args.optimizer` / `optimizer=` in Python), which hands it only the trainable "
                "parameters, not through LightningCLI's top-level `--optimizer`."
            )
