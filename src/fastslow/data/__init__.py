"""Data loading and validation: digits, MNIST IDX files, .npz."""

from fastslow.data.datasets import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
