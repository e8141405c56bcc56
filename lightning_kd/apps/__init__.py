"""Applications built on the library core: what the ``lightning-kd`` command runs beside ``fit`` / ``validate`` /
``test`` / ``predict``, and the tools around runs.

* :mod:`~lightning_kd.apps.cli_app`, :mod:`~lightning_kd.apps.cli_parser`,
  :mod:`~lightning_kd.apps.model_from_checkpoint`: the LightningCLI behind :func:`lightning_kd.cli.main`;
* :mod:`~lightning_kd.apps.demo` (``make demo``), :mod:`~lightning_kd.apps.sweep` (the LS grid),
  :mod:`~lightning_kd.apps.export` (``export-student``), :mod:`~lightning_kd.apps.summarize` and
  :mod:`~lightning_kd.apps.paper_results` (``summarize``: tables against the paper),
  :mod:`~lightning_kd.apps.run_folders` (``runs/<name>/version_N``, ``latest``) and
  :mod:`~lightning_kd.apps.analysis` (the notebooks' helpers).

The core (``module``, ``teacher``, ``step_runners``, ``losses``, ``models``, ``data``, ``callbacks``) never imports
from here. The old paths (``lightning_kd.demo``, ``lightning_kd.tools.summarize``, ...) still import (see
``lightning_kd/_moved.py``).
"""
