"""Data loading and validation: digits, MNIST IDX files, .npz, image folders, event recordings (tonic)."""

from fastslow.data.datasets import Dataset, Inputs, check_batch, check_inputs, load_dataset, load_inputs, resolved_data

__all__ = ["Dataset", "Inputs", "check_batch", "check_inputs", "load_dataset", "load_inputs", "resolved_data"]
