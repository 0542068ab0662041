"""Paired rainy/clean datasets in the standard layout ``ROOT/{train,test}/{input,target}/``.

Pairs are matched by file stem, never by sort position, because one missing or extra file would
otherwise silently shift every later pair. Training crops and flips are a pure function of
``(seed, epoch, index)`` so a run gives the same samples whatever the number of DataLoader workers
or ranks, and exactly the same samples again after resuming.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from utils.core.errors import InputError, UsageError
from utils.data.image_io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image_rgb
from utils.data.rain import make_rain_pair, parse_rain_kinds

# Operating-system clutter that may sit next to images; anything else must be an image.
IGNORED_NAMES = frozenset({'thumbs.db', 'desktop.ini'})


class DatasetError(InputError):
    """A dataset folder or pair that cannot be used; the one-line message names the file(s)."""


class DatasetOptionError(DatasetError, UsageError):
    """A dataset preset or split name that does not exist: a bad option (exit 2)."""


# ----------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------
def natural_key(text: str) -> list:
    """Sort key that orders ``img2`` before ``img10`` (numbers compared as numbers)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r'(\d+)', text)]


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """Map stem -> image file for one folder; clutter ignored, anything else must be an image."""
    if not folder.is_dir():
        parent = folder.parent
        hint = ''
        if (parent / 'train').is_dir() or (parent / 'test').is_dir():
            hint = f' (it has train/ or test/: pass {parent}/train or {parent}/test)'
        raise DatasetError(f'{parent}: no {folder.name}/ folder; expected '
                           f'{parent}/input and {parent}/target{hint}')
    found: dict[str, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith('.') or path.name.lower() in IGNORED_NAMES or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(f'{path}: not an image file (expected one of '
                               f'{", ".join(IMAGE_EXTENSIONS)}); move it out of the dataset')
        if path.stem in found:
            raise DatasetError(f'{found[path.stem]} and {path}: two images with the same name '
                               f'in one folder; keep only one')
        found[path.stem] = path
    if not found:
        raise DatasetError(f'{folder}: folder has no images')
    return found


def find_pairs(folder: str | os.PathLike, verify: bool = False) -> list[tuple[Path, Path]]:
    """``(input, target)`` paths of ``folder/input`` and ``folder/target`` matched by stem.

    Extensions may differ between the two folders. Sorted naturally by stem. With
    ``verify=True`` every image is decoded and pair sizes are compared (slow on big sets);
    otherwise those errors surface when a pair is read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f'{folder}: dataset folder not found')
    inputs = _images_by_stem(folder / 'input')
    targets = _images_by_stem(folder / 'target')
    for stem in sorted(inputs, key=natural_key):
        if stem not in targets:
            raise DatasetError(f'{inputs[stem]}: no matching target '
                               f'{folder / "target" / stem}.* (pairs are matched by name)')
    for stem in sorted(targets, key=natural_key):
        if stem not in inputs:
            raise DatasetError(f'{targets[stem]}: no matching input '
                               f'{folder / "input" / stem}.* (pairs are matched by name)')
    pairs = [(inputs[s], targets[s]) for s in sorted(inputs, key=natural_key)]
    if verify:
        for inp, tgt in pairs:
            read_pair(inp, tgt)
    return pairs


def read_pair(input_path: Path, target_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both images as ``HxWx3`` uint8; :class:`DatasetError` if unreadable or sizes differ."""
    try:
        inp = read_image_rgb(input_path)
        tgt = read_image_rgb(target_path)
    except ImageReadError as err:
        raise DatasetError(str(err)) from None
    if inp.shape != tgt.shape:
        raise DatasetError(f'{input_path} ({inp.shape[1]}x{inp.shape[0]}) and {target_path} '
                           f'({tgt.shape[1]}x{tgt.shape[0]}): input and target sizes differ')
    return inp, tgt


@dataclass
class PairsSummary:
    """What `dataset_load.py check` reports about a folder of pairs."""
    pairs: int
    min_size: tuple[int, int]    # (width, height) of the smallest image (by area)
    max_size: tuple[int, int]
    distinct_sizes: int
    mean_abs_diff: float         # mean |input - target| in 8-bit levels: ~0 means no rain


def summarize_pairs(pairs: list[tuple[Path, Path]], progress: bool = False) -> PairsSummary:
    """Decode every pair (errors name the files) and summarise sizes and input/target gap."""
    sizes, diffs = [], []
    for inp_path, tgt_path in tqdm(pairs, desc='check', unit='pair', disable=not progress):
        inp, tgt = read_pair(inp_path, tgt_path)
        sizes.append((inp.shape[1], inp.shape[0]))
        diffs.append(float(np.abs(inp.astype(np.int16) - tgt.astype(np.int16)).mean()))
    if not sizes:
        raise DatasetError('no pairs to summarise')
    by_area = sorted(sizes, key=lambda wh: (wh[0] * wh[1], wh))
    return PairsSummary(len(pairs), by_area[0], by_area[-1], len(set(sizes)),
                        float(np.mean(diffs)))


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1] (a read-only cached photo is copied, not shared)."""
    return torch.from_numpy(np.require(img, requirements=['C', 'W'])).permute(2, 0, 1).float().div_(255.0)


# ----------------------------------------------------------------------------------------------
# Patches for training
# ----------------------------------------------------------------------------------------------
def pad_to_min_size(img: np.ndarray, size: int) -> np.ndarray:
    """Pad bottom/right so both sides are >= ``size``: reflect, or replicate when too small."""
    h, w = img.shape[:2]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h == 0 and pad_w == 0:
        return img
    # Reflection needs the padding to be shorter than the side it mirrors.
    if pad_h < h and pad_w < w:
        return np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode='reflect')
    return np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode='edge')


def random_patch(inp: np.ndarray, tgt: np.ndarray, size: int, rng: np.random.Generator,
                 augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same random crop (and, with ``augment``, one of the 8 flips/rotations) of both."""
    inp, tgt = pad_to_min_size(inp, size), pad_to_min_size(tgt, size)
    h, w = inp.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    inp = inp[top:top + size, left:left + size]
    tgt = tgt[top:top + size, left:left + size]
    if augment:
        k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        inp, tgt = np.rot90(inp, k), np.rot90(tgt, k)
        if flip:
            inp, tgt = inp[:, ::-1], tgt[:, ::-1]
    return inp, tgt


class EpochAware:
    """The epoch lives in shared memory, so ``set_epoch`` reaches DataLoader workers even with
    ``persistent_workers``; samples are drawn from (seed, epoch, index)."""
    _epoch: torch.Tensor

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))


def shared_epoch() -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64).share_memory_()


class PairedPatchDataset(EpochAware, Dataset):
    """Training samples: ``(input, target)`` float32 ``[3, p, p]`` patches in [0, 1].

    The crop/flip of sample ``index`` depends only on ``(seed, epoch, index)``. The epoch lives in
    shared memory, so ``set_epoch`` reaches DataLoader workers even with ``persistent_workers``;
    call it before iterating each epoch.
    """

    def __init__(self, folder: str | os.PathLike, patch_size: int = 64, augment: bool = True,
                 seed: int = 0):
        if int(patch_size) < 1:
            raise DatasetError(f'patch_size must be a positive integer, got {patch_size}')
        self.folder = Path(folder)
        self.pairs = find_pairs(self.folder)
        self.patch_size = int(patch_size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self._epoch = shared_epoch()

    def __len__(self) -> int:
        return len(self.pairs)

    def rng_for(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator that decides sample ``index`` of ``epoch`` (current epoch by default)."""
        epoch = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed, epoch, int(index)])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inp, tgt = read_pair(*self.pairs[index])
        inp, tgt = random_patch(inp, tgt, self.patch_size, self.rng_for(index), self.augment)
        return _to_tensor(inp), _to_tensor(tgt)


class PairedImageDataset(Dataset):
    """Whole images for validation/testing: ``(input [3,H,W], target [3,H,W], stem)``.

    Sizes differ between images, so load with ``batch_size=1``.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.pairs = find_pairs(self.folder)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        inp_path, tgt_path = self.pairs[index]
        inp, tgt = read_pair(inp_path, tgt_path)
        return _to_tensor(inp), _to_tensor(tgt), inp_path.stem


# ----------------------------------------------------------------------------------------------
# Benchmark presets
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetPreset:
    """What is known of a benchmark (docs/protocol.md); counts are as commonly cited."""
    name: str
    train_pairs: int | None      # None: no training split
    test_pairs: int | None       # None: varies between copies
    has_ground_truth: bool
    original_convention: str     # `dataset_load.py prepare --convention` most likely to fit
    notes: str

    @property
    def has_train(self) -> bool:
        return self.train_pairs is not None


DATASET_PRESETS: dict[str, DatasetPreset] = {p.name: p for p in (
    DatasetPreset('Rain200L', 1800, 200, True, 'jorder',
                  'light synthetic streaks over BSD images (about 481x321)'),
    DatasetPreset('Rain200H', 1800, 200, True, 'jorder',
                  'heavy synthetic streaks, same images as Rain200L'),
    DatasetPreset('Rain1200', 12000, 1200, True, 'side-by-side',
                  'DID-MDN: three density levels; original files hold rainy|clean side by side'),
    DatasetPreset('Rain12', None, 12, True, 'standard', 'small synthetic test set'),
    DatasetPreset('RW_Rain', None, None, False, 'standard',
                  'real-world rainy images; ground truth may be absent (no-reference use only)'),
)}

SPLITS = ('train', 'test')


def get_preset(name: str) -> DatasetPreset:
    """Preset by name, case-insensitively; :class:`DatasetError` listing the known ones."""
    for key, preset in DATASET_PRESETS.items():
        if key.lower() == str(name).lower():
            return preset
    raise DatasetOptionError(f'unknown dataset {name!r}; known: {", ".join(DATASET_PRESETS)} '
                       f'(or pass a folder directly)')


def resolve_split_dir(dataset: str, data_root: str | os.PathLike, split: str) -> Path:
    """``data_root/NAME/split``, checked to exist; the error says how to get or prepare it."""
    preset = get_preset(dataset)
    if split not in SPLITS:
        raise DatasetOptionError(f'unknown split {split!r}; use one of {", ".join(SPLITS)}')
    if split == 'train' and not preset.has_train:
        raise DatasetOptionError(f'{preset.name} has no training split (test only); '
                           f'train on another dataset')
    root = Path(data_root)
    folder = root / preset.name / split
    if not folder.is_dir() and root.is_dir():
        # Accept a differently-cased folder name (rain200h/) that users often have.
        for child in root.iterdir():
            if child.name.lower() == preset.name.lower() and (child / split).is_dir():
                return child / split
    if not folder.is_dir():
        raise DatasetError(
            f'{folder}: not found. Put the {preset.name} release from the ESDNet/VLIF-Net '
            f'repositories there as {folder}/input and {folder}/target, or convert the original '
            f'release with: python dataset_load.py prepare --convention '
            f'{preset.original_convention} --src DOWNLOADED_FOLDER --name {preset.name} '
            f'--split {split} --out {root}')
    return folder


# ----------------------------------------------------------------------------------------------
# Pairs made on the fly from clean photos
# ----------------------------------------------------------------------------------------------
class CleanPhotoRainDataset(EpochAware, Dataset):
    """Training pairs drawn from a folder of clean photos: ``(rainy, clean)`` ``[3, p, p]``.

    Sample ``index`` of an epoch is photo ``index % n``: a random crop at a random scale (a
    ``p/scale`` square shrunk to ``p``, so one large photo gives patches at several zooms), one
    of the 8 flips/rotations, then rain of a kind drawn from ``rain`` (families, ``random``
    and/or the presets; never a kind of the ``holdout`` family) -- or, with probability
    ``clean_fraction``, no rain at all, which teaches the model to leave a clean image alone. Everything is a pure function of ``(seed, epoch, index)``, so
    resumed runs and any number of workers see the same samples. Photos are decoded once per
    process and kept in memory.
    """

    def __init__(self, folder: str | os.PathLike, patch_size: int = 64,
                 rain: str | tuple[str, ...] = 'random', augment: bool = True, seed: int = 0,
                 scales: tuple[float, ...] = (1.0, 0.5, 0.25), clean_fraction: float = 0.1,
                 samples_per_photo: int = 32, holdout: str | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f'{self.folder}: clean photo folder not found')
        try:
            kinds = parse_rain_kinds(rain, holdout)
        except ValueError as err:
            raise DatasetError(str(err)) from None
        if int(patch_size) < 1:
            raise DatasetError(f'patch_size must be a positive integer, got {patch_size}')
        if not 0.0 <= clean_fraction < 1.0:
            raise DatasetError(f'clean_fraction must be in [0, 1), got {clean_fraction}')
        if samples_per_photo < 1 or not scales or min(scales) <= 0 or max(scales) > 1:
            raise DatasetError('samples_per_photo must be >= 1 and scales in (0, 1]')
        self.photos = list_images(self.folder)
        if not self.photos:
            raise DatasetError(f'{self.folder}: folder has no images')
        self.patch_size, self.rain, self.augment = int(patch_size), kinds, bool(augment)
        self.seed, self.scales = int(seed), tuple(float(s) for s in scales)
        self.clean_fraction, self.samples_per_photo = float(clean_fraction), int(samples_per_photo)
        self._epoch = shared_epoch()
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.photos) * self.samples_per_photo

    def __getstate__(self):        # DataLoader workers start with an empty cache
        state = self.__dict__.copy()
        state['_cache'] = {}
        return state

    def photo(self, i: int) -> np.ndarray:
        if i not in self._cache:
            try:
                self._cache[i] = read_image_rgb(self.photos[i])
            except ImageReadError as err:
                raise DatasetError(str(err)) from None
        return self._cache[i]

    def make_pair(self, index: int, epoch: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, str]:
        """``(rainy, clean, kind)`` uint8 patches of sample ``index`` (kind ``'none'``: no rain)."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        img = self.photo(index % len(self.photos))
        p = self.patch_size
        img = pad_to_min_size(img, p)
        h, w = img.shape[:2]
        side = min(int(round(p / self.scales[int(rng.integers(len(self.scales)))])), h, w)
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = img[top:top + side, left:left + side]
        if side != p:
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(
                (p, p), Image.BICUBIC, reducing_gap=None))
        if self.augment:
            crop = np.rot90(crop, int(rng.integers(0, 4)))
            if rng.integers(0, 2):
                crop = crop[:, ::-1]
        clean = np.array(crop)          # a copy: never a view of the cached photo
        if rng.random() < self.clean_fraction:
            return clean, clean, 'none'
        kind = self.rain[int(rng.integers(len(self.rain)))]
        rain_seed = [self.seed, epoch, int(index), int(rng.integers(2 ** 31))]
        rainy, target = make_rain_pair(clean, kind, rain_seed)
        return rainy, target, kind

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rainy, clean, _ = self.make_pair(index)
        return _to_tensor(rainy), _to_tensor(clean)


class MixedTrainingSet(torch.utils.data.ConcatDataset):
    """Several training sets (paired folders, clean photos) as one; ``set_epoch`` reaches all."""

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)
