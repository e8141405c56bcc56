"""The ``lightning-kd`` command line: a LightningCLI with model and data chosen by ``class_path``.

Examples::

    lightning-kd fit --config configs/demo/kd_ls.yaml
    lightning-kd fit --config configs/demo/kd_ls.yaml --print_config > my_run.yaml
    lightning-kd test --config my_run.yaml --ckpt_path runs/.../best.ckpt
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from typing_extensions import override

# imported so that their classes resolve by short name in configs (DigitsDataModule, KD, ...)
import lightning_kd.data
import lightning_kd.losses  # noqa: F401
from lightning_kd._system import ClassifierSystem


class KDLightningCLI(LightningCLI):
    """LightningCLI for this project: ``data.num_classes`` is linked into the model's ``num_classes``.

    The link is applied when the data module is instantiated, so a config never repeats the class count, and
    networks given by name (``student: resnet8``) are built for the data's classes.
    """

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    @override
    def _parse_ckpt_path(self) -> None:
        # LightningCLI merges a checkpoint's hyperparameters into the config when `--ckpt_path` is given. Those of a
        # checkpoint written by the CLI are its config and merge cleanly. A module built in Python records its
        # settings as flattened primitives (`loss.temperature`, ...), which are no init arguments: for such a
        # checkpoint the given config is the whole truth, and the checkpoint provides the weights and state.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
            if "_instantiator" not in checkpoint.get("hyper_parameters", {}):
                return
        super()._parse_ckpt_path()


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lightning-kd`` console script and of ``python -m lightning_kd``."""
    KDLightningCLI(
        ClassifierSystem,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # a rerun of the same config overwrites its saved config.yaml instead of failing
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
