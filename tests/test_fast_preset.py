"""``configs/cifar100/fast.yaml`` as a second ``--config``: it changes how steps run, never the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_kd.cli import KDLightningCLI

REPO = Path(__file__).resolve().parents[1]
FAST = REPO / "configs" / "cifar100" / "fast.yaml"
# what fast.yaml may change, and to what; everything else must stay as the first config has it
EXPECTED = {
    "trainer.precision": "bf16-mixed",
    "trainer.benchmark": True,
    "model.init_args.cuda_graph": True,
    "model.init_args.channels_last": True,
    "data.init_args.device_augment": True,
    "data.init_args.num_workers": 0,
}


def _parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *configs: Path) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)  # the presets' relative run folders and data paths land here, if anywhere
    args = [item for path in configs for item in ("--config", str(path))]
    cli = KDLightningCLI(model_class=None, args=args, run=False, subclass_mode_model=True, subclass_mode_data=True)
    parsed = cli.config.as_dict()
    parsed.pop("config")  # the list of --config paths itself
    return _flatten(parsed)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def test_fast_preset_sets_only_the_speed_options() -> None:
    assert _flatten(yaml.safe_load(FAST.read_text())) == EXPECTED


@pytest.mark.parametrize(
    "preset",
    ["kd_ls/resnet32x4_resnet8x4.yaml", "dkd/resnet32x4_resnet8x4.yaml", "students/resnet8x4.yaml"],
)
def test_fast_preset_merges_into_a_preset_without_changing_the_recipe(
    preset: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = REPO / "configs" / "cifar100" / preset
    alone = _parsed(monkeypatch, tmp_path, path)
    fast = _parsed(monkeypatch, tmp_path, path, FAST)
    changed = {key: fast[key] for key in fast.keys() | alone.keys() if fast.get(key) != alone.get(key)}
    assert changed == {key: value for key, value in EXPECTED.items() if alone.get(key) != value}
    # the recipe: the first config's model, loss, optimizer, schedule, batch and epochs all survive the merge
    assert fast["model.class_path"] == alone["model.class_path"]
    assert fast["data.init_args.batch_size"] == 64
    assert fast["model.init_args.lr_scheduler.init_args.milestones"] == [150, 180, 210]
