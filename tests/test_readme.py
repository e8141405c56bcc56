"""The README's commands and code, run for real on a tiny setting, in document order, in a scratch folder.

Shell commands (```bash blocks) of `lightning-kd` run in-process; trainer subcommands on the digits get
`TINY` appended (one batch per stage), those of CIFAR-100 / ImageNet presets are parsed with `--print_config`
(they need the real data and hours). `make demo` / `make test` are not run here: the demo runner has its own
test (tests/test_demo.py) and `make test` is what runs this file. Every ```python block is executed, every
```yaml block parsed. A command this runner does not understand fails the test, so new README commands get
covered or explicitly handled.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from lightning_kd.cli import TRAINER_SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=1",
    "--data.init_args.image_size=16",
]
PROGRAMS = {".venv/bin/lightning-kd", "lightning-kd"}
NOT_RUN = {("make", "demo"), ("make", "test")}
# presets that need real data and a long training: only parsed
HEAVY_CONFIGS = ("configs/cifar100/", "configs/imagenet/")


def readme_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of the README, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", (REPO / "README.md").read_text(), flags=re.M | re.S)


def shell_commands(code: str) -> list[list[str]]:
    joined = code.replace("\\\n", " ")
    return [tokens for line in joined.splitlines() if (tokens := shlex.split(line, comments=True))]


def run_command(tokens: list[str]) -> None:
    if tuple(tokens[:2]) in NOT_RUN:
        assert tokens[1] in (REPO / "Makefile").read_text(), tokens
        return
    if tokens[0] in PROGRAMS:
        args = tokens[1:]
    elif tokens[:3] == ["python", "-m", "lightning_kd"]:
        args = tokens[3:]
    else:
        pytest.fail(f"tests/test_readme.py does not know how to run this README command: {shlex.join(tokens)}")
    if args[0] == "cache-teacher" and any(a.startswith(HEAVY_CONFIGS) for a in args):
        # a build over the real data with a published teacher: its arguments and preset are checked, not run
        from lightning_kd.apps.cache_teacher import _parser

        parsed, rest = _parser().parse_known_args(args[1:])
        assert not rest, f"unknown cache-teacher arguments in the README: {rest}"
        assert all((REPO / config).is_file() for config in parsed.config), parsed.config
        return
    redirect = None
    if ">" in args:
        redirect = Path(args[args.index(">") + 1])
        args = args[: args.index(">")]
    if args[0] in TRAINER_SUBCOMMANDS:
        if any(a.startswith(HEAVY_CONFIGS) for a in args):
            args = [*args, "--print_config"]
            redirect = redirect or Path("heavy_config.yaml")
        else:
            args = [*args, *TINY]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        try:
            code = main(args)
        except SystemExit as exit_info:  # --print_config
            code = exit_info.code
    assert code == 0, f"README command failed ({code}): {shlex.join(tokens)}"
    if redirect is not None:
        redirect.write_text(output.getvalue())
        assert yaml.safe_load(redirect.read_text())["model"], shlex.join(tokens)


def test_readme_commands_and_code_run(tmp_path, monkeypatch):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    ran = {"bash": 0, "python": 0, "yaml": 0}
    for language, code in readme_blocks():
        if language == "bash":
            for tokens in shell_commands(code):
                run_command(tokens)
                ran["bash"] += 1
        elif language == "python":
            exec(compile(code, "README.md (python block)", "exec"), {"__name__": "readme"})
            ran["python"] += 1
        elif language == "yaml":
            assert isinstance(yaml.safe_load(code), dict)
            ran["yaml"] += 1
    assert ran["bash"] >= 8
    assert ran["python"] >= 4
    assert ran["yaml"] >= 1
    # the sequence of the README left a fit, a test beside it and the exported student
    assert (tmp_path / "runs/demo/kd_ls/latest/test_0/metrics.csv").is_file()
    assert (tmp_path / "resnet8_digits.json").is_file()
