"""Reading any image as 8-bit RGB and writing PNGs atomically.

Every script reads images through :func:`read_image_rgb` so that grayscale, RGBA, palette and
16-bit files are converted the same way everywhere, and writes through :func:`write_png_atomic`
so an interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class ImageReadError(ValueError):
    """An image file that is missing, empty, corrupt or not an image; the message names it."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files ignored)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith('.') and is_image_file(p))


def _to_rgb_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Convert any decoded array to HxWx3 uint8 (16-bit scaled by 257, alpha dropped)."""
    if arr.dtype == np.uint16 or arr.dtype == np.int32 or mode.startswith('I'):
        arr = np.clip(np.round(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 2:          # LA: luminance + alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif arr.shape[2] >= 4:          # RGBA: alpha dropped (not composited), like cv2.imread
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``HxWx3`` uint8 RGB array; :class:`ImageReadError` if it can't."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f'{path}: file not found')
    if path.stat().st_size == 0:
        raise ImageReadError(f'{path}: empty file (0 bytes)')
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == 'P' or im.mode == 'PA' or im.mode == 'CMYK' or im.mode == 'YCbCr':
                im = im.convert('RGB')
            mode = im.mode
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f'{path}: cannot decode image ({err})') from None
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f'{path}: unsupported image layout {arr.shape}')
    return _to_rgb_uint8(arr, mode)


def uint8_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)[None]


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """1x3xHxW (or 3xHxW) float in [0, 1] -> HxWx3 uint8, clamped and rounded."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f'expected one image, got a batch of {t.shape[0]}')
        t = t[0]
    arr = t.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0)
    return arr.cpu().numpy()


def read_image_tensor(path: str | os.PathLike) -> torch.Tensor:
    """Read an image as a 1x3xHxW float32 tensor in [0, 1]."""
    return uint8_to_tensor(read_image_rgb(path))


def write_png_atomic(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write an HxWx3 uint8 array as PNG via a temp file + rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}.', suffix='.png.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as fh:
            Image.fromarray(np.asarray(img, dtype=np.uint8)).save(fh, format='PNG')
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())   # mkstemp makes 0600; outputs are shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# write_png_atomic's temp names: '.' + stem + '.' + mkstemp's 8 random characters + '.png.tmp'.
_TEMP_PNG = re.compile(r'\.(?P<stem>.+)\.[a-z0-9_]{8}\.png\.tmp')


def remove_interrupted_writes(folder: str | os.PathLike, stems: Iterable[str]) -> list[Path]:
    """Delete temp files of :func:`write_png_atomic` calls killed before their rename.

    A process killed outright (SIGKILL, power loss) cannot clean up; the re-run that redoes
    those outputs does. Only the temps of the given output stems are touched.
    """
    folder, stems = Path(folder), set(stems)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        match = _TEMP_PNG.fullmatch(path.name)
        if match and match['stem'] in stems and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
