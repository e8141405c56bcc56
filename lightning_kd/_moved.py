"""The import paths of modules that moved into :mod:`lightning_kd.apps`, kept working as aliases.

The applications built on the library (CLI internals, demo, sweep, export, analysis, run folders, summarize) live in
``lightning_kd/apps/`` since the package was split into core and applications. Their old paths
(``lightning_kd.demo``, ``python -m lightning_kd.sweep``, ``lightning_kd.demo.EpochLine`` in an older config, ...)
resolve to the same module objects through the finder below, so classes keep one identity whichever path imported
them, and ``python -m <old path>`` runs the moved module's code.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import CodeType, ModuleType

#: old module path -> where it lives now
MOVED = {
    "lightning_kd.analysis": "lightning_kd.apps.analysis",
    "lightning_kd.demo": "lightning_kd.apps.demo",
    "lightning_kd.export": "lightning_kd.apps.export",
    "lightning_kd.run_folders": "lightning_kd.apps.run_folders",
    "lightning_kd.sweep": "lightning_kd.apps.sweep",
    "lightning_kd.tools": "lightning_kd.apps",
    "lightning_kd.tools.paper_results": "lightning_kd.apps.paper_results",
    "lightning_kd.tools.summarize": "lightning_kd.apps.summarize",
}


class _AliasLoader(importlib.abc.Loader):
    """Loads an old path as the module object of its new path (imported once, under its new name)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system set the alias's spec on the shared module object: give it back its own
        module.__spec__ = self._target_spec

    def get_code(self, fullname: str) -> CodeType | None:
        """The moved module's code, for ``python -m <old path>`` (runpy asks the loader for it)."""
        spec = importlib.util.find_spec(self.target)
        loader = spec.loader if spec is not None else None
        return loader.get_code(self.target) if isinstance(loader, importlib.abc.InspectLoader) else None


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        if fullname not in MOVED:
            return None  # type: ignore[return-value]
        is_package = any(name.startswith(f"{fullname}.") for name in MOVED)
        spec = importlib.util.spec_from_loader(fullname, _AliasLoader(MOVED[fullname]), is_package=is_package)
        # runpy (``python -m <old path>``) needs a file: the moved module's
        target_spec = importlib.util.find_spec(MOVED[fullname])
        if spec is not None and target_spec is not None:
            spec.origin = target_spec.origin
        return spec  # type: ignore[return-value]


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): before the path finder, which would otherwise load a
    second copy of a module under an aliased package's ``__path__``."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
