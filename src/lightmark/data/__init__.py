"""Landmark data: readers for every supported format and the evaluation split (torch-free).

``data.augment`` (training only, albumentations) is not imported here, to keep this package light.
"""
from __future__ import annotations

from lightmark.data.protocol import read_file_list, select_split, split_aflw, subset_by_names, write_file_list
from lightmark.data.readers import KINDS, DataError, LandmarkDataset, Record, Sample, open_dataset, require_68

__all__ = [
    "KINDS",
    "DataError",
    "LandmarkDataset",
    "Record",
    "Sample",
    "open_dataset",
    "require_68",
    "read_file_list",
    "select_split",
    "split_aflw",
    "subset_by_names",
    "write_file_list",
]
