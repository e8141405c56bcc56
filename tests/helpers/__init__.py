"""Test helpers: fake datasets in the real on-disk formats, tiny networks, operator counting."""
