"""Data layer: NIfTI I/O, class maps, dataset preparation, the SIFA/MM-WHS release format,
the synthetic heart phantom, and the torch datasets training reads.

See docs/ARCHITECTURE.md for the prepared-dataset layout.
"""
from .context import context_of, with_context
from .dataset import PreparedDataset, SliceDataset, from_slices, parse_case_spec
from .errors import DataError
from .io import Volume, read_nifti, write_label_nifti
from .labelmap import PRESETS, LabelMap, map_labels, parse_class_map
from .phantom import write_phantom
from .prepare import find_cases, prepare_dataset, resize_slices
from .sifa import prepare_sifa, read_sifa_npz, read_tfrecord_slices, sifa_intensity

__all__ = [
    "DataError", "PreparedDataset", "SliceDataset", "from_slices", "parse_case_spec",
    "prepare_dataset", "prepare_sifa", "read_tfrecord_slices", "read_sifa_npz",
    "sifa_intensity", "write_phantom", "parse_class_map", "map_labels", "LabelMap", "PRESETS",
    "read_nifti", "write_label_nifti", "Volume", "find_cases", "resize_slices",
    "with_context", "context_of",
]
