"""``python -m lightning_kd`` is the ``lightning-kd`` console script."""

from lightning_kd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
