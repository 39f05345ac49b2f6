"""Image folders (root/<class name>/<image>): decoding and the normalization statistics."""

import numpy as np
import torch


def decode_image(path, mode, size):
    """One file -> float32 (C, H, W) with raw 0..255 values, converted to mode and resized to size (H, W)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if (im.height, im.width) != size:
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.float32)
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def folder_stats(files, train_idx, seed, mode, size, channels, stats_sample, decode=decode_image):
    """Per-channel mean/std in [0, 1] units of a seeded sample of at most stats_sample training images.

    Decoding every image of a big folder would take long; a seeded sample is plenty.
    """
    pick = train_idx[np.random.RandomState(seed).permutation(len(train_idx))[:stats_sample]]
    s = torch.zeros(channels, dtype=torch.float64)
    s2 = torch.zeros(channels, dtype=torch.float64)
    for j in pick:
        x = decode(files[int(j)], mode, size).to(torch.float64) / 255.0
        s += x.sum(dim=(1, 2))
        s2 += (x * x).sum(dim=(1, 2))
    count = len(pick) * size[0] * size[1]
    m = s / count
    sd = (s2 / count - m * m).clamp_min(0).sqrt()
    sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
    return [float(v) for v in m], [float(v) for v in sd]


def scan_folder(root, extensions):
    """(class names, [(file, class index)]): sorted class sub-folders, searched recursively, like ImageFolder."""
    import os

    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        for dirpath, dirnames, files in os.walk(os.path.join(root, name), followlinks=True):
            dirnames.sort()
            samples.extend((os.path.join(dirpath, f), index) for f in sorted(files)
                           if f.lower().endswith(extensions))
    if not samples:
        raise ValueError(f"no images in class sub-folders of {root}")
    return classes, samples


def load_folder(root, class_names, split, normalize, resize, grayscale, gray_modes, seed,
                stats_sample, extensions, fitted):
    """(train_x, train_y, val_x, val_y): every image decoded into memory (N x C x H x W float32).

    split(n) -> (train indices, validation indices) of the n images found.
    """
    from PIL import Image

    classes, samples = scan_folder(root, extensions)
    if classes != class_names:  # the model's outputs are indexed by the project's classes
        raise ValueError(f"{root} has class folders {classes}, the project was built for {class_names}")
    with Image.open(samples[0][0]) as im:  # the first image fixes size and colour, as in NetStudio
        height, width, first_mode = im.height, im.width, im.mode
    gray = grayscale or first_mode in gray_modes
    mode, c = ("L", 1) if gray else ("RGB", 3)
    size = (resize, resize) if resize else (height, width)
    train_idx, val_idx = split(len(samples))
    if normalize == "none":
        scale, mean, std = 1.0, None, None
    elif normalize == "minmax":
        scale, mean, std = 255.0, [0.0] * c, [1.0] * c
    else:  # standard
        scale = 255.0
        mean, std = folder_stats([f for f, _ in samples], train_idx, seed, mode, size, c, stats_sample)
    fitted.update(pixel_scale=scale, mean=mean, std=std)
    shift = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    spread = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def convert(idx):
        xs = torch.empty((len(idx), c, *size), dtype=torch.float32)
        ys = torch.empty(len(idx), dtype=torch.int64)
        for k, j in enumerate(idx):
            path, label = samples[int(j)]
            x = decode_image(path, mode, size) / scale
            if shift is not None and spread is not None:
                x = (x - shift) / spread
            xs[k], ys[k] = x, label
        return xs, ys

    train_x, train_y = convert(train_idx)
    val_x, val_y = convert(val_idx)
    return train_x, train_y, val_x, val_y
