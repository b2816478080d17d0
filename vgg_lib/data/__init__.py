"""Sect. 3.1: data sets and the paper's training/test transforms.

>>> from vgg_lib.data import build_dataset, rgb_statistics, train_transform, scaled_size
>>> train = build_dataset("shapes", "train")              # uint8 (3, 64, 64) images, 10 classes
>>> crop = 56                                             # the paper's 224, scaled to 64-pixel data
>>> S = (scaled_size(256, crop), scaled_size(512, crop))  # scale jittering, as S in [256, 512]
>>> train.transform = train_transform(S, crop, **rgb_statistics(train))

Fixed-size training crops batch with PyTorch's default collate; :func:`collate` does the same
and explains what to do when test images of different sizes meet in one batch.
"""

from .cache import cache_dir
from .datasets import DATASETS, SPLITS, build_dataset, split_indices
from .shapes import CLASSES as SHAPES_CLASSES
from .stats import rgb_statistics
from .transforms import (PAPER_CROP, TestTransform, TrainTransform, collate, jitter_middle, normalise,
                         rescale, rescaled_size, scaled_size, test_transform, train_transform)

__all__ = ["DATASETS", "SPLITS", "SHAPES_CLASSES", "PAPER_CROP", "build_dataset",
           "rgb_statistics", "train_transform", "test_transform", "TrainTransform",
           "TestTransform", "scaled_size", "jitter_middle", "rescale", "rescaled_size", "normalise", "collate",
           "cache_dir", "split_indices"]
