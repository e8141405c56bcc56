"""Command-line tools around training runs: the multi-seed summary and the paper's reported numbers."""
