"""Training-set RGB statistics (Sect. 3.1): the mean RGB that is subtracted from every pixel,
and the principal components of RGB values used by AlexNet's colour shift."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from .cache import cache_dir, key, save_json

IMAGEFOLDER_SAMPLE = 10_000  # images drawn (seeded) from an image folder when max_images is None


def _images(dataset, max_images, seed=0):
    n = len(dataset)
    if max_images is None and getattr(dataset, "name", None) == "imagefolder":
        max_images = IMAGEFOLDER_SAMPLE
    idx = range(n)
    if max_images is not None and max_images < n:
        idx = np.sort(np.random.default_rng(seed).permutation(n)[:max_images])
    images = getattr(dataset, "images", None)
    if isinstance(images, np.ndarray) and images.ndim == 4:  # in-memory data: whole chunks
        idx = np.asarray(idx)
        for i in range(0, len(idx), 512):
            yield np.asarray(images[idx[i:i + 512]])
        return
    get = getattr(dataset, "image", None) or (lambda i: dataset[i][0])
    for i in idx:
        try:
            x = get(int(i))
        except RuntimeError:
            if getattr(dataset, "skip_corrupt", False):  # an unreadable file: leave it out
                continue
            raise
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 3):
            raise ValueError("rgb_statistics needs uint8 (3, H, W) images: build the data set "
                             "with transform=None")
        yield x.numpy()[None]


def _files_fingerprint(dataset, max_images, seed=0):
    """For data read from files (an image folder): a hash of the sampled files' paths, sizes
    and modification times, so statistics cached before the images changed are not reused."""
    samples = getattr(dataset, "samples", None)
    if not isinstance(samples, list):
        return None
    n = len(samples)
    if max_images is None:
        max_images = IMAGEFOLDER_SAMPLE
    idx = range(n) if max_images >= n else np.sort(np.random.default_rng(seed).permutation(n)[:max_images])
    h = hashlib.sha256()
    for i in idx:
        path = samples[int(i)][0]
        try:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}|missing\n".encode())
    return f"{n}-{h.hexdigest()[:16]}"


def compute_rgb_statistics(dataset, max_images=None) -> dict:
    """Mean RGB (pixel units) and eigen-decomposition of the RGB covariance ([0, 1] units).

    Sums are accumulated in float64 over every pixel. Eigenvalues are sorted in decreasing
    order; eigenvectors are the columns of ``eigvec``, each with a positive sum (a fixed sign).
    """
    n, s, ss = 0, np.zeros(3), np.zeros((3, 3))
    for chunk in _images(dataset, max_images):
        x = chunk.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
        n += x.shape[1]
        s += x.sum(axis=1)
        ss += x @ x.T
    if n == 0:
        raise ValueError("rgb_statistics: the data set has no images")
    mean = s / n
    cov = (ss / n - np.outer(mean, mean)) / 255.0**2
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0, None), eigvec[:, order]
    eigvec *= np.where(eigvec.sum(axis=0) < 0, -1.0, 1.0)
    return dict(mean=mean, eigval=eigval, eigvec=eigvec, pixels=n)


def rgb_statistics(dataset, max_images=None, refresh=False) -> dict:
    """Statistics of a (training) data set's pixels: ``dict(mean, eigval, eigvec)`` as tensors.

    Computed once and cached under ``cache_dir()/stats``, keyed by the data set's identity
    (name, root, split, image_size, seed, size). ``max_images`` limits the work to a seeded
    sample of images (default: all, except 10,000 for an image folder such as ImageNet).
    Use them as ``train_transform(S, crop, **rgb_statistics(train_set))``.
    """
    identity = getattr(dataset, "identity", None)
    path = None
    if identity is not None:
        ident = dict(identity, max_images=max_images, kind="rgb_statistics", version=1)
        files = _files_fingerprint(dataset, max_images)
        if files is not None:  # in-memory data keep their old keys
            ident["files"] = files
        path = cache_dir() / "stats" / f"{identity.get('name', 'data')}-{key(ident)}.json"
    if path is not None and path.exists() and not refresh:
        import json

        stats = json.loads(path.read_text())
    else:
        stats = compute_rgb_statistics(dataset, max_images)
        stats = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in stats.items()}
        if path is not None:
            save_json(path, dict(stats, identity=identity))
    return {k: torch.tensor(stats[k], dtype=torch.float64) for k in ("mean", "eigval", "eigvec")}
