"""The argument parser of ``lightning-kd fit|validate|test|predict``: short errors with suggestions, readable help.

On top of Lightning's parser (jsonargparse):

* an error is two lines (the error and where to get help), not the whole usage; an unknown init argument or
  option names the closest valid ones;
* abbreviated options (``--trainer.max_epoch`` for ``--trainer.max_epochs``) are refused, not expanded;
* the help of an ``nn.Module`` argument lists this package's classes, not every subclass of ``torch.nn.Module``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from typing import Any, NoReturn

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser
from typing_extensions import override

_OPTION_NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted")
_KEY_NOT_EXPECTED = re.compile(r"Key '([^']+)' is not expected")
_CLASS_PATH = re.compile(r"class_path '([^']+)'")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (\S+)", re.IGNORECASE)
_KNOWN_SUBCLASSES = re.compile(r", known subclasses: ([^()]*)")
#: how many class paths the help of an argument lists before it only counts the rest
_MAX_LISTED = 8


class KDHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter, with the list of known subclasses cut to this package's classes and a count."""

    @override
    def _get_help_string(self, action: Any) -> str:
        # argparse's documented hook for a formatter's per-argument text (ArgumentDefaultsHelpFormatter overrides it)
        text = super()._get_help_string(action)
        return _KNOWN_SUBCLASSES.sub(_shorten_subclasses, text)


def _shorten_subclasses(match: re.Match[str]) -> str:
    paths = [p.strip() for p in match.group(1).split(",") if p.strip()]
    if len(paths) <= _MAX_LISTED:
        return match.group(0)
    ours = [p for p in paths if p.startswith("lightning_kd.")][:_MAX_LISTED]
    listed = ", ".join(ours) + ", " if ours else ""
    return f", known subclasses: {listed}and {len(paths) - len(ours)} more (any importable class path)"


class KDArgumentParser(LightningArgumentParser):
    """Lightning's argument parser with short, suggesting errors and no abbreviated options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", KDHelpFormatter)
        super().__init__(*args, **kwargs)

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        wants_traceback = os.environ.get("LIGHTNING_KD_DEBUG", "") not in ("", "0") or os.environ.get(
            "JSONARGPARSE_DEBUG"
        )
        if not self.exit_on_error or wants_traceback:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {explain(message, parser)}\n")
        sys.stderr.write(f"tip: `{prog} --help` lists every option (add --debug for the parser's full report)\n")
        self.exit(2)


def explain(message: str, parser: Any = None) -> str:
    """The parser's error ``message`` shortened, with the closest valid names where a name was wrong."""
    unknown = _OPTION_NOT_ACCEPTED.findall(message) or _KEY_NOT_EXPECTED.findall(message)
    if unknown:
        # the innermost class the bad key was given to
        owner = _CLASS_PATH.findall(message.split(unknown[0])[0])
        if owner:
            valid = _init_arguments(owner[-1])
            if valid is not None:
                return _unknown_name(unknown[0], valid, f"{owner[-1]} has no argument")
        return _unknown_name(unknown[0], _option_names(parser), "unknown key")
    unrecognized = _UNRECOGNIZED.search(message)
    if unrecognized:
        return _unknown_name(unrecognized.group(1).split("=")[0], _option_names(parser), "unknown option")
    return message.strip()


def _unknown_name(name: str, valid: list[str], what: str) -> str:
    leaf = name.rsplit(".", 1)[-1].lstrip("-")
    candidates = {v.rsplit(".", 1)[-1].lstrip("-") if "." not in name else v: v for v in valid}
    close = difflib.get_close_matches(name if "." in name else leaf, list(candidates), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(candidates[c]) for c in close)}?" if close else ""
    listed = "" if close or len(valid) > 20 else f" (valid: {', '.join(valid)})"
    return f"{what} {name!r}{hint}{listed}"


def _init_arguments(class_path: str) -> list[str] | None:
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError):
        return None
    return [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _option_names(parser: Any) -> list[str]:
    if parser is None:
        return []
    return sorted(o for o in getattr(parser, "_option_string_actions", {}) if o.startswith("--"))
