"""Reading any image as 8-bit RGB and writing PNGs atomically.

Every script reads images through :func:`read_image_rgb` so that grayscale, RGBA, palette and
16-bit files are converted the same way everywhere, and writes through :func:`write_png_atomic`
so an interrupted run never leaves a half-written file behind.

Images are read as people see them:

* **EXIF orientation is applied** (``PIL.ImageOps.exif_transpose``): a phone JPEG stored
  sideways with the tag "rotate 90" is restored and scored upright, as every viewer and
  OpenCV's ``cv2.imread`` show it. Outputs are written upright, without the tag.
* **Multi-frame files** (animated GIF/PNG/WebP, multi-page TIFF) are refused with one line: which
  frame is "the image" is a guess.
* **Decompression bombs** -- files declaring more than :func:`max_image_pixels` pixels (default
  178,956,970, Pillow's own hard limit, about 13,400 x 13,400) -- are refused as bad files from
  their header, before any pixel is decoded; a folder's other images are still processed. Set
  ``SPIKEDERAIN_MAX_PIXELS=N`` to change the limit (``0``: no limit).

Writes refuse an image with NaN or infinite values (:func:`tensor_to_uint8`) rather than turning
it into a black or noisy PNG, and a write that fails (no space left, read-only folder, file-size
limit) raises an ``OSError`` that names the file.
"""
from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.core.atomic import atomic_open, check_writable, remove_stale_temps  # noqa: F401
from utils.core.errors import InputError, SpikeDerainError
from utils.core.settings import MAX_PIXELS_ENV, env_int

# Our own limit replaces Pillow's (checked on the header's size in read_image_rgb, which names the
# file and says how to raise it): Pillow's would stop a whole run with a traceback.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = 178_956_970        # 2 x Pillow's default MAX_IMAGE_PIXELS
# Write errors that will fail for every later file too: a command stops at the first one.
OUT_OF_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                                 errno.EACCES, errno.EPERM})

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class ImageReadError(InputError):
    """An image file that is missing, empty, corrupt or not an image; the message names it."""


class NonFiniteImageError(SpikeDerainError, ValueError):
    """An image tensor with NaN or infinite values, which is never written."""


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


def max_image_pixels() -> int:
    """The largest image (width x height) the reader accepts; 0 means no limit.

    ``SPIKEDERAIN_MAX_PIXELS`` overrides :data:`DEFAULT_MAX_PIXELS`.
    """
    return env_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)    # inf, -1, 1e400: one line naming it


def _check_frames_and_size(path: Path, im: Image.Image, limit: int) -> None:
    frames = getattr(im, 'n_frames', 1) or 1
    if frames > 1:
        raise ImageReadError(f'{path}: has {frames} frames (animated or multi-page file); '
                             f'save the frame you mean as a single image')
    w, h = im.size
    if limit and w * h > limit:
        raise ImageReadError(f'{path}: declares {w}x{h} = {w * h:,} pixels, over the limit of '
                             f'{limit:,} (a decompression bomb?); if the image is real, raise '
                             f'the limit with {MAX_PIXELS_ENV}=N')


def _check_file(path: Path) -> None:
    """A missing or empty file, said as such (not as Pillow's "cannot identify")."""
    if not path.is_file():
        raise ImageReadError(f'{path}: file not found')
    if path.stat().st_size == 0:
        raise ImageReadError(f'{path}: empty file (0 bytes)')


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``HxWx3`` uint8 RGB array; :class:`ImageReadError` if it can't.

    EXIF orientation is applied; multi-frame files and images over :func:`max_image_pixels`
    are refused (see the module docstring).
    """
    path = Path(path)
    _check_file(path)
    limit = max_image_pixels()
    try:
        with Image.open(path) as opened, warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            _check_frames_and_size(path, opened, limit)
            opened.load()
            im = ImageOps.exif_transpose(opened)
            if im.mode == 'P' or im.mode == 'PA' or im.mode == 'CMYK' or im.mode == 'YCbCr':
                im = im.convert('RGB')
            mode = im.mode
            arr = np.array(im)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError, MemoryError) as err:
        raise ImageReadError(f'{path}: cannot decode image ({err})') from None
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f'{path}: unsupported image layout {arr.shape}')
    return _to_rgb_uint8(arr, mode)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` as :func:`read_image_rgb` will return it (EXIF rotation applied),
    from the header only; the same :class:`ImageReadError` for bad, multi-frame or huge files."""
    path = Path(path)
    _check_file(path)
    limit = max_image_pixels()
    try:
        with Image.open(path) as im:
            _check_frames_and_size(path, im, limit)
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(f'{path}: cannot read image ({err})') from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def uint8_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    arr = np.ascontiguousarray(img)
    if not arr.flags.writeable:          # torch warns on read-only arrays (e.g. decoded images)
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)[None]


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """1x3xHxW (or 3xHxW) float in [0, 1] -> HxWx3 uint8, clamped and rounded.

    A tensor with NaN or infinite values is a :class:`NonFiniteImageError`: clamping would turn
    it into a plausible-looking black or noisy picture.
    """
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f'expected one image, got a batch of {t.shape[0]}')
        t = t[0]
    if t.is_floating_point():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise NonFiniteImageError(f'image has {bad:,} non-finite (NaN/inf) values of '
                                      f'{t.numel():,}; not written (non-finite weights or an '
                                      f'overflow in the model)')
    arr = t.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0)
    return arr.cpu().numpy()


def read_image_tensor(path: str | os.PathLike) -> torch.Tensor:
    """Read an image as a 1x3xHxW float32 tensor in [0, 1]."""
    return uint8_to_tensor(read_image_rgb(path))


def write_png_atomic(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write an HxWx3 uint8 array as PNG, complete or not at all (:mod:`utils.core.atomic`).

    A failed write (no space, read-only, file-size limit) is an ``OSError`` naming ``path``.
    """
    path = Path(path)
    with atomic_open(path, 'wb') as fh:
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(fh, format='PNG')
    return path


def is_out_of_space(err: BaseException) -> bool:
    """A write error that every later write will hit too (full disk, read-only, no access)."""
    return isinstance(err, OSError) and err.errno in OUT_OF_SPACE_ERRNOS


def remove_interrupted_writes(folder: str | os.PathLike, stems: Iterable[str]) -> list[Path]:
    """Delete temp files of :func:`write_png_atomic` calls (``STEM.png``) killed before their
    rename.

    A process killed outright (SIGKILL, power loss) cannot clean up; the re-run that redoes
    those outputs does. Only the temps of the given output stems are touched.
    """
    return remove_stale_temps(folder, (f'{stem}.png' for stem in stems))


def resize_longest(img: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the longest side is ``size`` (bicubic; never enlarges)."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale >= 1:
        return img
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(new, Image.BICUBIC))
