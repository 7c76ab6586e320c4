"""`one-shui-bench`: methods x seeds through the `one-shui` CLI, then the paper's tables, plots and W&B."""
