"""Data loading and validation: digits, MNIST IDX files, .npz."""

from fastslow.data.datasets import Dataset, check_batch, load_dataset, resolved_data

__all__ = ["Dataset", "check_batch", "load_dataset", "resolved_data"]
