"""Lightning's XLA accelerator on torch-xla's CPU backend (``PJRT_DEVICE=CPU``), for tests without a TPU.

``Trainer(accelerator="tpu")`` refuses a machine without TPUs: Lightning 2.6 counts devices with
``torch_xla._internal.tpu.num_available_devices()`` (TPU only) and raises ``MisconfigurationException:
`XLAAccelerator` can not run on your system since the accelerator is not available``. This subclass reports
the one CPU XLA device instead, so the rest of Lightning's XLA path (``SingleDeviceXLAStrategy``, XLA
precision, ``xm.optimizer_step``, ``mark_step``) runs unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.accelerators import XLAAccelerator
from typing_extensions import override


class CPUXLAAccelerator(XLAAccelerator):
    """One XLA device backed by the CPU (torch-xla's PJRT CPU client)."""

    @staticmethod
    @override
    def auto_device_count() -> int:
        return 1

    @staticmethod
    @override
    def is_available() -> bool:
        return True

    @staticmethod
    @override
    def parse_devices(devices: Any) -> int:
        return 1

    @staticmethod
    @override
    def get_parallel_devices(devices: Any) -> list[torch.device]:
        import torch_xla

        return [torch_xla.device()]
