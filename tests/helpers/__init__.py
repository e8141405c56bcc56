"""Test helpers: writers of small fake datasets in the real on-disk formats."""
