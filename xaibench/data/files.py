"""User data files: a folder of images, ``.npz``, ``.csv``, ``.pt`` or ``.jsonl``, read into a ``Dataset``.

Text data, a ``.jsonl`` file or a ``.csv`` with a "text" column of words, is read by
``xaibench.data.text_files``; what follows is about arrays.

Every reader produces plain arrays; one function then checks them and infers the modality from the
per-sample rank: 1 tabular (F,), 2 sequence (C, L), 3 image (C, H, W). A rank-2 array is read as a
single-channel image (H, W) instead when it has masks, is uint8, or has more than ``MAX_SEQUENCE_CHANNELS``
rows. uint8 images are scaled to [0, 1]. ``.pt`` files are read with ``torch.load(weights_only=True)``,
``.npz`` without pickle, so reading data never executes code from the file. Only regular files and
folders are read (a FIFO would block forever), and an image is opened only when its header declares at
most ``MAX_IMAGE_PIXELS`` pixels (PIL's default decompression-bomb limit).

String labels (a csv's target column, an image folder's class subfolders) are kept as names
(``Dataset.label_names``): ``data.prepare`` matches them to the model's class names. An image folder may hold
``classes.txt`` (the class names in the model's output order, one a line) and a ``masks/`` folder that
mirrors its images, ``masks/<class>/<stem>.png`` (or ``masks/<stem>.png`` when unlabelled), one mask per
image, binary by > 0; ``masks`` is therefore no class folder. Mask arrays may be (N, H, W) or (N, 1, H, W).
"""

from __future__ import annotations

import csv
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xaibench.core.errors import InputError, first_line
from xaibench.core.lazy import lazy_import
from xaibench.core.text import printable
from xaibench.data.base import Dataset
from xaibench.data.text_files import is_number, read_jsonl, text_table

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TARGET_COLUMNS = ("target", "label", "y", "class")
MAX_SEQUENCE_CHANNELS = 4
MAX_IMAGE_PIXELS = 89_478_485  # PIL's default: a 0.25 GiB 24-bit image; more is refused unread
_GREY_MODES = ("1", "L", "LA", "La")
# MemoryError: an array header that claims terabytes (numpy allocates before it reads)
_READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, MemoryError, zipfile.BadZipFile, zlib.error,
                csv.Error)
_IMAGE_FORMATS = ("PNG", "JPEG")  # what the suffixes promise: a renamed EPS never reaches Ghostscript
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")
MASKS_FOLDER = "masks"
CLASSES_FILE = "classes.txt"


@dataclass(frozen=True)
class _RawData:
    """Arrays as read from a file, before checks. ``y`` may hold strings (class names)."""

    x: np.ndarray
    y: np.ndarray | None = None
    masks: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None


def load_file(path: Path) -> Dataset:
    """Read a data file or image folder as split "all".

    Raises:
        InputError: missing, unsupported or corrupt file, or arrays of the wrong shape or type.
    """
    if not path.exists():
        raise InputError(f"no such data file or folder: {path}")
    if not (path.is_file() or path.is_dir()):  # checked before any open: a FIFO would block forever
        raise InputError(f"{path} is not a regular file or folder (a FIFO, socket or device)")
    suffix = path.suffix.lower()
    readers = {".npz": _read_npz, ".pt": _read_pt, ".csv": _read_csv, ".jsonl": _read_jsonl}
    if not path.is_dir() and suffix not in readers:
        raise InputError(f"unsupported data file {path}: use an image folder, .npz, .csv, .pt or .jsonl")
    reader = _read_image_folder if path.is_dir() else readers[suffix]
    try:
        raw = reader(path)
    except pickle.UnpicklingError:
        raise InputError(
            f"cannot read {path}: corrupt, or it holds objects other than tensors, lists, dicts and strings"
        ) from None
    except _READ_ERRORS as err:
        raise InputError(f"cannot read {path}: {first_line(err)}") from None
    return raw if isinstance(raw, Dataset) else _to_dataset(raw, printable(path))


def _to_dataset(raw: _RawData, name: str) -> Dataset:
    """Check ``raw``, infer the modality and convert to tensors (split "all", indices 0..N-1).

    Raises:
        InputError: on a non-numeric, empty or non-finite x, or y / masks / names that do not fit x.
    """
    x = raw.x
    if x.dtype.kind not in "biuf" or not 2 <= x.ndim <= 4 or len(x) == 0:
        raise InputError(
            f"{name}: x must be a non-empty numeric array (N, F), (N, C, L), (N, H, W) or (N, C, H, W); "
            f"got {x.dtype} {x.shape}"
        )
    image = x.ndim == 4 or (
        x.ndim == 3 and (raw.masks is not None or x.dtype == np.uint8 or x.shape[1] > MAX_SEQUENCE_CHANNELS)
    )
    modality = "image" if image else ("tabular" if x.ndim == 2 else "sequence")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 are refused below
        values = x.astype(np.float32)
    if image and x.dtype == np.uint8:
        values /= np.float32(255)
    if image and x.ndim == 3:
        values = values[:, None]
    if not np.isfinite(values).all():
        raise InputError(f"{name}: x contains NaN or infinite values (or values beyond float32's range)")
    y, label_names = _labels(raw.y, raw.class_names, len(x), name)
    if raw.feature_names is not None and (modality != "tabular" or len(raw.feature_names) != x.shape[1]):
        raise InputError(f"{name}: {len(raw.feature_names)} feature names do not fit x of shape {x.shape}")
    return Dataset(
        x=torch.from_numpy(np.ascontiguousarray(values)),
        y=None if y is None else torch.from_numpy(y),
        name=name,
        split="all",
        modality=modality,
        indices=torch.arange(len(x), device="cpu"),
        masks=None if raw.masks is None else torch.from_numpy(_masks(raw.masks, values.shape, name)),
        class_names=raw.class_names,
        feature_names=raw.feature_names,
        label_names=label_names,
    )


def _labels(
    y: np.ndarray | None, class_names: tuple[str, ...] | None, n: int, name: str
) -> tuple[np.ndarray | None, tuple[str, ...] | None]:
    """int64 labels, and the label names they index when the labels are strings (their sorted unique
    values; matched to the model's classes later, in ``data.prepare``)."""
    if y is None:
        return None, None
    if y.shape != (n,):
        raise InputError(f"{name}: y must have shape ({n},), got {y.shape}")
    if y.dtype.kind in "US":
        names, y = np.unique(y, return_inverse=True)
        return y.astype(np.int64), tuple(str(c) for c in names)
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
        raise InputError(f"{name}: y must hold integer class labels, got {y.dtype}")
    if y.min().item() < 0:  # .item(): compared as Python numbers, before a cast could wrap them
        raise InputError(f"{name}: y holds negative class labels")
    if y.max().item() >= 2**63:
        raise InputError(f"{name}: y holds class labels too large for a class index ({y.max().item()})")
    labels = y.astype(np.int64)
    if class_names is not None and labels.max() >= len(class_names):
        raise InputError(f"{name}: label {labels.max()} has no name among {len(class_names)} class names")
    return labels, None


def _masks(masks: np.ndarray, image_shape: tuple[int, ...], name: str) -> np.ndarray:
    """Masks as bool (N, H, W) matching images (N, C, H, W); (N, 1, H, W) is Quantus's layout."""
    if len(image_shape) != 4:
        raise InputError(f"{name}: masks are only for images, but x has shape {image_shape}")
    expected = (image_shape[0], *image_shape[2:])
    with_channel = (image_shape[0], 1, *image_shape[2:])
    if masks.shape not in (expected, with_channel):
        raise InputError(f"{name}: masks must have shape {expected} or {with_channel} for images, "
                         f"got {masks.shape}")
    return masks.reshape(expected).astype(bool)


def _names(value: Any) -> tuple[str, ...] | None:
    """Class or feature names from a 1-D string array or list (None when absent)."""
    return None if value is None else tuple(str(v) for v in np.asarray(value).ravel())


def _from_mapping(arrays: Mapping[str, Any], path: Path) -> _RawData:
    """_RawData from a name -> array mapping with "x" and optional y, masks, class_names, feature_names."""
    if "x" not in arrays:
        found = ", ".join(sorted(map(str, arrays))) or "nothing"  # a .pt dict may have keys of any type
        raise InputError(f"{path} has no array named 'x' (found: {found})")
    y, masks = arrays.get("y"), arrays.get("masks")
    return _RawData(
        x=np.asarray(arrays["x"]),
        y=None if y is None else np.asarray(y),
        masks=None if masks is None else np.asarray(masks),
        class_names=_names(arrays.get("class_names")),
        feature_names=_names(arrays.get("feature_names")),
    )


def _read_npz(path: Path) -> _RawData:
    # our own handle: np.load leaves the file it opened open when the archive is corrupt
    with path.open("rb") as handle:
        npz = np.load(handle, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise InputError(f"{path} is a single .npy array, not an .npz archive; save it with "
                             "numpy.savez(path, x=...)")
        with npz:
            return _from_mapping({key: npz[key] for key in npz.files}, path)


def _read_pt(path: Path) -> _RawData:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about a pickle protocol before refusing it
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        protocol = _pickle_protocol(path)
        if protocol is not None and protocol > 3:
            raise InputError(f"cannot read {path}: it uses pickle protocol {protocol}, which the safe "
                             "(weights-only) loader does not read; re-save it with torch.save's default "
                             "protocol") from None
        raise
    if isinstance(content, torch.Tensor):
        content = {"x": content}
    if not isinstance(content, dict):
        raise InputError(f"{path} must hold a tensor x or a dict with x (and optional y, masks)")
    return _from_mapping({k: _tensor_to_numpy(v, k, path) for k, v in content.items()}, path)


def _pickle_protocol(path: Path) -> int | None:
    """The protocol of a ``.pt`` file's pickle (``data.pkl`` in a zip archive), None when not a pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.split("/", 1)[-1] == "data.pkl"), None)
            if name is None:
                return None
            with archive.open(name) as member:
                head = member.read(2)
    else:
        with path.open("rb") as handle:
            head = handle.read(2)
    return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else None


def _tensor_to_numpy(value: Any, key: object, path: Path) -> Any:
    """numpy view of a dense tensor (half and bfloat16 widened to float32); other values unchanged.

    Raises:
        InputError: a sparse, quantized or nested tensor, or a dtype numpy has no equivalent for.
    """
    if not isinstance(value, torch.Tensor):
        return value
    kind = ("nested" if value.is_nested else "quantized" if value.is_quantized
            else str(value.layout).removeprefix("torch."))
    if kind != "strided":
        raise InputError(f"{path}: {key!r} is a {kind} tensor; store a dense tensor")
    value = value.detach()
    if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
        value = value.float()
    try:
        return value.numpy()
    except (TypeError, RuntimeError):
        raise InputError(f"{path}: {key!r} is a {value.dtype} tensor, which xaibench cannot read") from None


def _read_jsonl(path: Path) -> Dataset:
    return read_jsonl(path, printable(path))


def _read_csv(path: Path) -> _RawData | Dataset:
    """Numeric features; the target is the first header name in TARGET_COLUMNS, else the last column.
    A csv with a "text" column of words is text data instead (``text_files.text_table``)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [[cell.strip() for cell in row] for row in csv.reader(handle) if row]
    text = text_table(rows, printable(path))
    if text is not None:
        return text
    header = rows[0] if _has_header(rows) else None
    body = rows[1:] if header else rows
    if not body or len(body[0]) < 2:
        raise InputError(f"{path}: need a header (optional) and rows with at least one feature and a target")
    width = len(body[0])
    for number, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise InputError(f"{path}: line {number} has {len(row)} fields, expected {width}")
    table = np.array(body, dtype=str)
    lowered = [h.lower() for h in header] if header else []
    target = next((lowered.index(t) for t in TARGET_COLUMNS if t in lowered), width - 1)
    features = [c for c in range(width) if c != target]
    for column in features:
        bad = next((cell for cell in table[:, column] if not is_number(cell)), None)
        if bad is not None:
            label = repr(header[column]) if header else str(column + 1)
            raise InputError(f"{path}: column {label} holds a non-number {str(bad)!r}")
    y = table[:, target]
    return _RawData(
        x=table[:, features].astype(np.float64),
        y=y.astype(np.float64) if all(is_number(cell) for cell in y) else y,
        feature_names=tuple(header[c] for c in features) if header else None,
    )


def _has_header(rows: list[list[str]]) -> bool:
    """A first row with a non-number above a number (a name over a numeric column) is a header."""
    if not rows:
        return False
    below = rows[1] if len(rows) > 1 else ["0"] * len(rows[0])
    return any(not is_number(a) and is_number(b) for a, b in zip(rows[0], below, strict=False))


def _read_image_folder(path: Path) -> _RawData:
    """Images in ``path`` (unlabelled) or in its class subfolders (labelled by subfolder name), with the
    class names of ``classes.txt`` and the masks of ``masks/`` where the folder has them."""
    files = _image_files(path, exclude=MASKS_FOLDER)
    if not files:
        raise InputError(f"{path} holds no .png or .jpg images")
    classes = [printable(p.relative_to(path).parts[0]) if p.parent != path else None for p in files]
    if None in classes and any(c is not None for c in classes):
        raise InputError(f"{path} mixes images at its top level with images in class subfolders")
    images = [_read_image(p) for p in files]
    if len({im.shape[:2] for im in images}) > 1:
        sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
        raise InputError(f"images in {path} differ in size ({', '.join(sizes)}); resize them to one size")
    masks = _read_masks(path, files, images[0].shape[:2]) if (path / MASKS_FOLDER).is_dir() else None
    if len({im.shape[2] for im in images}) > 1:  # some greyscale, some colour: colour wins
        images = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    x = np.stack(images).transpose(0, 3, 1, 2)
    y = None if classes[0] is None else np.array(classes, dtype=str)
    return _RawData(x=x, y=y, masks=masks, class_names=_read_class_names(path / CLASSES_FILE))


def _image_files(path: Path, exclude: str | None = None) -> list[Path]:
    """Image files under ``path``, sorted, skipping hidden parts and the top-level folder ``exclude``."""
    return sorted(
        p for p in path.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and p.relative_to(path).parts[0] != exclude
    )


def _read_class_names(path: Path) -> tuple[str, ...] | None:
    """The non-blank lines of ``classes.txt`` (None without one); a name given twice is refused."""
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"{path} is not a regular file")
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    twice = next((name for number, name in enumerate(names) if name in names[:number]), None)
    if twice is not None:
        raise InputError(f"{printable(path)} names the class {printable(twice)!r} twice")
    return tuple(printable(name) for name in names) or None


def _read_masks(path: Path, files: list[Path], size: tuple[int, ...]) -> np.ndarray:
    """bool (N, H, W): the mask of each image in ``files``, ``masks/<relative path>`` with any image
    suffix, > 0 in any channel; every image needs one and every mask an image."""
    masks: dict[Path, Path] = {}
    for mask in _image_files(path / MASKS_FOLDER):
        key = mask.relative_to(path / MASKS_FOLDER).with_suffix("")
        if key in masks:
            first, second = sorted(str(p.relative_to(path)) for p in (masks[key], mask))
            raise InputError(f"{path}: two masks for {printable(key)}: {printable(first)} and "
                             f"{printable(second)}")
        masks[key] = mask
    keys = [p.relative_to(path).with_suffix("") for p in files]
    missing = next((p for p, key in zip(files, keys, strict=True) if key not in masks), None)
    if missing is not None:
        raise InputError(f"{path}: no mask for {printable(missing.relative_to(path))}: {MASKS_FOLDER}/ "
                         f"must hold {MASKS_FOLDER}/<class>/<file name> (any image suffix) for every image")
    orphans = sorted(set(masks) - set(keys))
    if orphans:
        orphan = orphans[0]
        raise InputError(f"{path}: the mask {printable(masks[orphan].relative_to(path))} has no image "
                         f"{printable(orphan)} (.png, .jpg or .jpeg)")
    return np.stack([_read_mask(masks[key], path, size) for key in keys])


def _read_mask(mask: Path, root: Path, size: tuple[int, ...]) -> np.ndarray:
    """One mask image as bool (H, W), > 0 in any channel; its size must be its image's."""
    pixels = _read_image(mask)
    if pixels.shape[:2] != size:
        raise InputError(f"{root}: the mask {printable(mask.relative_to(root))} is {pixels.shape[1]}x"
                         f"{pixels.shape[0]} but its image is {size[1]}x{size[0]}")
    return pixels.max(axis=2) > 0


def _read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, C) with C = 1 for greyscale and 3 otherwise (alpha dropped).

    Raises:
        InputError: an image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, silently
            image = Image.open(path, formats=_IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as err:  # over twice PIL's limit: PIL gives only the count
        match = _PIL_PIXELS.search(str(err))
        raise _too_large(path, f"{match[1]} pixels" if match else "too many pixels") from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise _too_large(path, f"{width}x{height} = {width * height} pixels")
        grey = image.mode in _GREY_MODES
        pixels = np.asarray(image.convert("L" if grey else "RGB"))
    return pixels[:, :, None] if grey else pixels


def _too_large(path: Path, size: str) -> InputError:
    return InputError(f"{path}: an image of {size} is over the limit of {MAX_IMAGE_PIXELS} pixels "
                      "(a decompression bomb?); scale it down")
