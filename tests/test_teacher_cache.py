"""The teacher-logit cache: view keys, the build (and its resume), exact fits, refusals, checkpoints and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_kd import DistillationModule
from lightning_kd.apps import cache_teacher
from lightning_kd.apps.cache_teacher import build_teacher_cache
from lightning_kd.data import CIFAR100DataModule
from lightning_kd.data.device_augment import (
    augment_uint8_batch,
    crop_flip_params_of_views,
    num_crop_flip_views,
    view_ids,
)
from lightning_kd.losses import CTKD, DKD, KD, MLKD
from lightning_kd.models import create_model
from lightning_kd.teacher_cache import TeacherLogitCache, metadata_path, teacher_fingerprint
from tests.helpers.fake_data import write_fake_cifar100

N_TRAIN, N_TEST, BATCH = 32, 16, 16
VIEWS = 162

pytestmark = pytest.mark.filterwarnings(
    "ignore:Loading CIFAR-100 from .* without verifying md5",
    "ignore:The teacher .* is built with random weights",
)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    return write_fake_cifar100(tmp_path_factory.mktemp("cifar_cache"), n_train=N_TRAIN, n_test=N_TEST, seed=3)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> str:
    torch.manual_seed(7)
    teacher = create_model("resnet8", 100)
    # non-trivial BatchNorm statistics, so the eval-mode forward differs from a training-mode one
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save({"model": teacher.state_dict()}, path)
    return str(path)


def _data(cifar_dir, **kwargs) -> CIFAR100DataModule:
    options = {"device_augment": True, "view_keys": True, **kwargs}
    return CIFAR100DataModule(str(cifar_dir), batch_size=BATCH, num_workers=0, verify_checksums=False, **options)


def _module(teacher_file, loss=None, **kwargs) -> DistillationModule:
    torch.manual_seed(0)
    loss = loss if loss is not None else KD(temperature=4.0)
    return DistillationModule(
        "resnet8", "resnet8", loss, num_classes=100, teacher_weights=teacher_file, lr_scheduler=None, **kwargs
    )


@pytest.fixture(scope="module")
def cache_file(cifar_dir, teacher_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "teacher.npy"
    return build_teacher_cache(_module(teacher_file), _data(cifar_dir), out, batch_size=400, progress=False)


def _fit(module, data, epochs=2, tmp_path=None, ckpt_path=None, **trainer_kwargs) -> Trainer:
    seed_everything(0, workers=True)
    settings = {
        "max_epochs": epochs,
        "accelerator": "cpu",
        "devices": 1,
        "deterministic": True,
        "logger": False,
        "enable_checkpointing": tmp_path is not None,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": tmp_path,
    }
    trainer = Trainer(**{**settings, **trainer_kwargs})
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


# ---------------------------------------------------------------- view keys


def test_view_ids_cover_the_162_views_once_and_invert():
    assert num_crop_flip_views(4) == VIEWS
    offsets = torch.cartesian_prod(torch.arange(9), torch.arange(9)).repeat_interleave(2, dim=0)
    flips = torch.tensor([False, True]).repeat(81)
    ids = view_ids(offsets, flips, padding=4)
    assert torch.equal(ids, torch.arange(VIEWS))
    back_offsets, back_flips = crop_flip_params_of_views(ids, padding=4)
    assert torch.equal(back_offsets, offsets)
    assert torch.equal(back_flips, flips)
    with pytest.raises(ValueError, match=r"view ids must lie in 0..161"):
        crop_flip_params_of_views(torch.tensor([162]))


def test_keyed_batches_name_the_image_and_the_view_they_show(cifar_dir):
    data = _data(cifar_dir)
    data.setup("fit")
    data.trainer = type("T", (), {"training": True})()  # the hook reads trainer.training only
    images, targets, indices = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8
    assert indices.dtype == torch.long
    augmented, same_targets, keys = data.on_after_batch_transfer((images, targets, indices), 0)
    assert torch.equal(same_targets, targets)
    assert torch.equal(keys // VIEWS, indices)
    offsets, flips = crop_flip_params_of_views(keys % VIEWS)
    raw = data.train_set.images[keys // VIEWS]
    expected = augment_uint8_batch(raw, offsets, flips, data.mean, data.std)
    assert torch.equal(augmented, expected)


def test_view_keys_change_nothing_about_the_drawn_augmentation(cifar_dir):
    with_keys, without = _data(cifar_dir), _data(cifar_dir, view_keys=False)
    for data in (with_keys, without):
        data.setup("fit")
        data.trainer = type("T", (), {"training": True})()
    batch = next(iter(with_keys.train_dataloader()))
    torch.manual_seed(5)
    keyed = with_keys.on_after_batch_transfer(batch, 0)
    torch.manual_seed(5)
    plain = without.on_after_batch_transfer(batch[:2], 0)
    assert len(keyed) == 3
    assert len(plain) == 2
    assert torch.equal(keyed[0], plain[0])


def test_view_keys_without_device_augment_is_refused_naming_device_augment():
    with pytest.raises(ValueError, match=r"view_keys=True needs device_augment=True.*--data.init_args.device_augment"):
        CIFAR100DataModule("unused", device_augment=False, view_keys=True)


# ---------------------------------------------------------------- the build


def test_cache_rows_are_the_teachers_eval_logits_of_each_view(cache_file, cifar_dir, teacher_file):
    cache = TeacherLogitCache(cache_file)
    assert cache.device.type == "cpu"
    assert cache.memory_mapped
    assert cache.metadata["shape"] == [N_TRAIN * VIEWS, 100]
    assert cache.metadata["progress"] == {"images_done": N_TRAIN, "complete": True}
    teacher = _module(teacher_file).teacher.eval()
    data = _data(cifar_dir)
    data.setup("fit")
    keys = torch.tensor([0, 1, 161, 162, 5 * VIEWS + 77, N_TRAIN * VIEWS - 1])
    offsets, flips = crop_flip_params_of_views(keys % VIEWS)
    inputs = augment_uint8_batch(data.train_set.images[keys // VIEWS], offsets, flips, data.mean, data.std)
    with torch.no_grad():
        expected = teacher(inputs)
    torch.testing.assert_close(cache.lookup(keys), expected, rtol=0, atol=1e-5)
    assert cache.metadata["teacher"]["weights_sha256"] == teacher_fingerprint(teacher)


def test_an_interrupted_build_resumes_where_it_stopped_and_gives_the_same_file(
    cache_file, cifar_dir, teacher_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(cache_teacher, "PROGRESS_EVERY_S", 0.0)  # record progress after every batch
    out = tmp_path / "resumed.npy"

    def interrupt(done: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt  # as Ctrl-C after 8 images were recorded

    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(
            _module(teacher_file), _data(cifar_dir), out, batch_size=4 * VIEWS, progress=False, on_progress=interrupt
        )
    partial = json.loads(metadata_path(out).read_text())["progress"]
    assert partial == {"images_done": 8, "complete": False}
    with pytest.raises(ValueError, match=r"incomplete \(8 of 32 images done\).*again; it resumes"):
        TeacherLogitCache(out)

    module = _module(teacher_file)
    forwarded = []
    module.teacher.register_forward_hook(lambda _m, args, _o: forwarded.append(args[0].shape[0]))
    build_teacher_cache(module, _data(cifar_dir), out, batch_size=4 * VIEWS, progress=False)
    assert sum(forwarded) == (N_TRAIN - 8) * VIEWS  # only the images not yet recorded ran
    np.testing.assert_array_equal(np.load(out), np.load(cache_file))
    assert json.loads(metadata_path(out).read_text())["progress"]["complete"] is True


def test_the_build_refuses_to_overwrite_a_cache_of_another_teacher(cache_file, cifar_dir, teacher_file):
    other = _module(teacher_file)
    with torch.no_grad():
        next(other.teacher.parameters()).add_(1.0)
    before = cache_file.read_bytes()
    with pytest.raises(ValueError, match=r"made for another run \(teacher.weights_sha256: .*\): it is left as it is"):
        build_teacher_cache(other, _data(cifar_dir), cache_file, progress=False)
    assert cache_file.read_bytes() == before


# ---------------------------------------------------------------- exact fits


@pytest.mark.parametrize(
    "make_loss",
    [
        pytest.param(lambda: KD(temperature=4.0), id="kd"),
        pytest.param(lambda: KD(temperature=2.0, kd_weight=9.0, standardize=True), id="kd_ls"),
        pytest.param(lambda: DKD(warmup=2), id="dkd"),
        pytest.param(lambda: CTKD(decay_epochs=2), id="ctkd"),
    ],
)
def test_a_fit_with_the_cache_gives_the_same_student_as_running_the_teacher(
    make_loss, cache_file, cifar_dir, teacher_file
):
    live = _module(teacher_file, make_loss())
    _fit(live, _data(cifar_dir))
    cached = _module(teacher_file, make_loss(), teacher_cache=str(cache_file))
    _fit(cached, _data(cifar_dir))
    assert cached.teacher_component.cache is not None
    # Not bit-equal on every machine: the cache ran the teacher on batches of 162 views per image, the live fit on
    # training batches, and a CPU's conv kernels may round differently by batch size. A wrong row (another view,
    # image or flip) moves the student by orders of magnitude more than this tolerance.
    for (name, a), b in zip(live.student.state_dict().items(), cached.student.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(live.loss.parameters(), cached.loss.parameters(), strict=True):  # CTKD's temperature
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_training_steps_read_the_cache_and_do_not_run_the_teacher(cache_file, cifar_dir, teacher_file):
    module = _module(teacher_file, teacher_cache=str(cache_file))
    calls = {"train": 0, "eval": 0}
    module.teacher.register_forward_hook(
        lambda _m, _a, _o: calls.__setitem__(
            "train" if module.trainer.training else "eval", calls["train" if module.trainer.training else "eval"] + 1
        )
    )
    _fit(module, _data(cifar_dir), epochs=1)
    assert calls["train"] == 0
    assert calls["eval"] == 1  # validation still runs the teacher (teacher/val_acc1 at the first epoch)


# ---------------------------------------------------------------- refusals


def test_a_cache_of_other_teacher_weights_is_refused_naming_the_field(cache_file, cifar_dir, teacher_file, tmp_path):
    state = torch.load(teacher_file)["model"]
    key = next(k for k in state if k.endswith("running_var"))
    state[key] = state[key] * 2
    other = tmp_path / "other.pth"
    torch.save({"model": state}, other)
    module = DistillationModule(
        "resnet8", "resnet8", KD(), num_classes=100, teacher_weights=str(other), teacher_cache=str(cache_file)
    )
    with pytest.raises(
        ValueError,
        match=r"does not match this run: teacher.weights_sha256: the cache has '[0-9a-f]+', "
        r"this run has '[0-9a-f]+'\. Build a cache",
    ):
        _fit(module, _data(cifar_dir), epochs=1)


def test_a_cache_of_other_data_is_refused_naming_the_field(cache_file, teacher_file, tmp_path):
    other_dir = write_fake_cifar100(tmp_path / "other", n_train=N_TRAIN, n_test=N_TEST, seed=4)
    before = cache_file.read_bytes()
    with pytest.raises(ValueError, match=r"data.fingerprint: the cache has '[0-9a-f]+', this run has '[0-9a-f]+'"):
        _fit(_module(teacher_file, teacher_cache=str(cache_file)), _data(other_dir), epochs=1)
    assert cache_file.read_bytes() == before  # a refusal leaves the cache as it was


def test_other_normalization_is_refused(cache_file, cifar_dir, teacher_file):
    data = _data(cifar_dir)
    data.mean = (0.5, 0.5, 0.5)
    with pytest.raises(
        ValueError,
        match=r"normalization.mean: the cache has \[0.5071, 0.4867, 0.4408\], this run has "
        r"\[0.5, 0.5, 0.5\]",
    ):
        _fit(_module(teacher_file, teacher_cache=str(cache_file)), data, epochs=1)


def test_data_without_view_keys_is_refused_naming_device_augment(cache_file, cifar_dir, teacher_file):
    for data in (_data(cifar_dir, view_keys=False), _data(cifar_dir, device_augment=False, view_keys=False)):
        with pytest.raises(
            ValueError,
            match=r"does not key its views\. Use CIFAR100DataModule with device_augment: "
            r"true and view_keys: true",
        ):
            _fit(_module(teacher_file, teacher_cache=str(cache_file)), data, epochs=1)


def test_mlkd_with_a_cache_is_refused(cache_file, cifar_dir, teacher_file):
    module = _module(teacher_file, MLKD(), teacher_cache=str(cache_file))
    data = _data(cifar_dir, device_augment=False, view_keys=False, two_views=True)
    with pytest.raises(ValueError, match=r"teacher_cache cannot serve MLKD: it takes 2 views"):
        _fit(module, data, epochs=1)


def test_a_missing_cache_file_names_the_build_command(cifar_dir, teacher_file, tmp_path):
    missing = tmp_path / "nope.npy"
    with pytest.raises(
        FileNotFoundError,
        match=r"does not exist\. Build the cache first with `lightning-kd "
        r"cache-teacher --config PRESET --output",
    ):
        _fit(_module(teacher_file, teacher_cache=str(missing)), _data(cifar_dir), epochs=1)


# ---------------------------------------------------------------- checkpoints and resume


def test_checkpoints_hold_the_caches_metadata_only_and_a_resume_checks_it(
    cache_file, cifar_dir, teacher_file, tmp_path
):
    module = _module(teacher_file, teacher_cache=str(cache_file))
    trainer = _fit(module, _data(cifar_dir), epochs=1, tmp_path=tmp_path)
    ckpt_path = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(ckpt_path, weights_only=True)
    assert checkpoint["teacher_cache"] == TeacherLogitCache(cache_file).compared_metadata()
    assert checkpoint["hyper_parameters"]["teacher_cache"] == str(cache_file.resolve())
    largest = max(v.numel() for v in checkpoint["state_dict"].values())
    assert largest < N_TRAIN * VIEWS * 100  # no logits in the checkpoint

    # the same cache: the resumed fit goes on
    resumed = _module(teacher_file, teacher_cache=str(cache_file))
    _fit(resumed, _data(cifar_dir), epochs=2, tmp_path=tmp_path / "ok", ckpt_path=ckpt_path)

    # a checkpoint whose recorded cache differs from the one opened now is refused
    checkpoint["teacher_cache"]["teacher"]["weights_sha256"] = "0" * 64
    tampered = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, tampered)
    again = _module(teacher_file, teacher_cache=str(cache_file))
    with pytest.raises(
        ValueError,
        match=r"Resuming from a checkpoint trained with another teacher cache: .*"
        r"teacher.weights_sha256",
    ):
        _fit(again, _data(cifar_dir), epochs=2, tmp_path=tmp_path / "bad", ckpt_path=str(tampered))


# ---------------------------------------------------------------- through the CLI


REPO = Path(__file__).resolve().parents[1]
CPU_PRESET = REPO / "configs" / "cifar100" / "cpu_scale" / "kd_ls.yaml"
CACHED = REPO / "configs" / "cifar100" / "cached.yaml"


def test_cache_teacher_then_fit_with_the_overlay_through_the_cli(cifar_dir, tmp_path, monkeypatch, capsys):
    from lightning_kd.cli import main

    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "resnet20.pth"
    torch.manual_seed(1)
    torch.save({"model": create_model("resnet20", 100).state_dict()}, teacher)
    small = [
        f"--data.init_args.data_dir={cifar_dir}",
        f"--data.init_args.batch_size={BATCH}",
        f"--model.init_args.teacher_weights={teacher}",
    ]
    assert main(["cache-teacher", "--config", str(CPU_PRESET), "--output", "r20.npy", "--no-progress", *small]) == 0
    out = capsys.readouterr().out
    assert "teacher cache complete: r20.npy" in out
    metadata = json.loads((tmp_path / "r20.npy.json").read_text())
    assert metadata["teacher"]["architecture"] == "resnet20"
    assert metadata["augmentation"] == {
        "image_size": 32,
        "padding": 4,
        "flips": True,
        "num_views": VIEWS,
        "key": "key = index * num_views + (top * (2 * padding + 1) + left) * 2 + flip",
    }
    assert metadata["precision"] == "float32"
    assert metadata["progress"] == {"images_done": N_TRAIN, "complete": True}

    fit = ["fit", "--config", str(CPU_PRESET), "--config", str(CACHED), *small, "--trainer.max_epochs=1"]
    fit += ["--trainer.limit_val_batches=1", "--model.init_args.teacher_cache=r20.npy"]
    assert main(fit) == 0
    record = torch.load(tmp_path / "runs/cifar100/cpu_scale/kd_ls/latest/checkpoints/last.ckpt", weights_only=True)
    assert record["hyper_parameters"]["teacher_cache"] == str(tmp_path / "r20.npy")
    assert record["teacher_cache"]["teacher"]["weights_sha256"] == metadata["teacher"]["weights_sha256"]

    # the overlay's fit with another teacher's weights: one clear message, exit code 2, nothing trained
    other = tmp_path / "other.pth"
    torch.save({"model": create_model("resnet20", 100).state_dict()}, other)
    assert main([*fit, f"--model.init_args.teacher_weights={other}"]) == 2
    assert "teacher.weights_sha256: the cache has" in capsys.readouterr().err


def test_the_overlay_sets_only_the_data_options():
    import yaml

    assert yaml.safe_load(CACHED.read_text()) == {
        "data": {"init_args": {"device_augment": True, "view_keys": True, "num_workers": 0}}
    }


# ---------------------------------------------------------------- precision and the graphed step


def test_cached_logits_stay_float32_under_bf16_mixed(cache_file, cifar_dir, teacher_file):
    seen = []

    class Spy(DistillationModule):
        def compute_loss_terms(self, student_logits, teacher_logits, targets):
            seen.append((student_logits.dtype, teacher_logits.dtype))
            return super().compute_loss_terms(student_logits, teacher_logits, targets)

    torch.manual_seed(0)
    module = Spy(
        "resnet8",
        "resnet8",
        KD(),
        num_classes=100,
        teacher_weights=teacher_file,
        teacher_cache=str(cache_file),
        lr_scheduler=None,
    )
    _fit(module, _data(cifar_dir), epochs=1, precision="bf16-mixed")
    assert seen
    assert {teacher for _, teacher in seen} == {torch.float32}
    assert {student for student, _ in seen} == {torch.bfloat16}  # autocast did run the student in bf16


def test_the_graphed_runner_hands_the_view_keys_to_the_step_through_its_static_buffers(cache_file, teacher_file):
    """The CUDA-graph runner packs the keys beside the inputs; a replay reads them from the static buffers."""
    from lightning_kd._views import first_view
    from lightning_kd.step_runners import _Layout, _packed

    module = _module(teacher_file, teacher_cache=str(cache_file))
    cache = module.teacher_component.open(TeacherLogitCache(cache_file).compared_metadata())
    inputs = torch.randn(4, 3, 32, 32)
    keys = torch.tensor([3, 170, 900, 5000])
    seen = {}

    def step(x, y, extras):
        seen["inputs"], seen["extras"] = x, extras
        logits = first_view(module.teacher_component.outputs(x, extras).logits)
        return logits, {"kd": logits.sum() * 0}

    fn = _packed(step, _Layout(single=True, views=1))
    out = fn((inputs, keys), torch.zeros(4, dtype=torch.long))
    assert seen["inputs"] is inputs
    assert torch.equal(seen["extras"][0], keys)
    assert torch.equal(out["correct"], (cache.lookup(keys).argmax(-1) == 0).sum(dtype=torch.float32))
    # two views and no extras: the layout gives the views back as they were
    views = (inputs, inputs + 1)
    _packed(step, _Layout(single=False, views=2))(views, torch.zeros(4, dtype=torch.long))
    assert seen["extras"] == ()
    assert len(seen["inputs"]) == 2


# ---------------------------------------------------------------- DDP


def test_ddp_on_two_processes_memory_maps_the_cache_and_trains_as_the_live_teacher(
    cache_file, cifar_dir, teacher_file, tmp_path
):
    import subprocess
    import sys

    from tests.helpers import ddp_cache

    for tag, cache in (("cached", str(cache_file)), ("live", "none")):
        result = subprocess.run(
            [sys.executable, ddp_cache.__file__, str(tmp_path), str(cifar_dir), teacher_file, cache, tag],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-4000:]
    reports = {
        (tag, rank): json.loads((tmp_path / f"{tag}_rank{rank}.json").read_text())
        for tag in ("cached", "live")
        for rank in (0, 1)
    }
    assert reports["cached", 0]["memory_mapped"] is True
    assert reports["cached", 1]["memory_mapped"] is True
    assert reports["live", 0]["memory_mapped"] is None
    hashes = {report["student_sha256"] for report in reports.values()}
    assert len(hashes) == 1  # both ranks, with and without the cache: the same student


# ---------------------------------------------------------------- on a GPU (benchmarks/gpu_suite.sh runs these)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the cache's rows gathered inside a CUDA graph")
def test_cuda_graph_fit_gathers_the_cache_on_the_device_like_the_eager_fit(cache_file, cifar_dir, teacher_file):
    students = {}
    for graph in (False, True):
        module = _module(teacher_file, teacher_cache=str(cache_file), cuda_graph=graph)
        _fit(module, _data(cifar_dir), epochs=3, accelerator="gpu", deterministic=False)
        assert module.teacher_component.cache.device.type == "cuda"  # copied to the device at train start
        students[graph] = {k: v.detach().cpu() for k, v in module.student.state_dict().items()}
    for name, value in students[False].items():
        torch.testing.assert_close(students[True][name], value, rtol=1e-3, atol=1e-4, msg=name)
