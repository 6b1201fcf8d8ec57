"""Reading a batch of images out of a data set that lives in a file, not in memory.

A cached image folder (``data.cache``) is a pair of uint8 ``.npy`` files opened as memory-mapped
tensors: every function that takes a tensor takes them. But a page of a memory-mapped file that
the process touches counts in its resident memory until the mapping goes, so one epoch of
random batches would pull the whole file in (4.9 GB for 100,000 images at 128x128). ``take``
therefore reads a batch with explicit ``preadv`` calls on the file instead: the bytes go through
the page cache (which the kernel frees as it needs) into the batch's own small buffer, and the
process's memory stays the batch's size whatever the data set's.

``Rows`` is a subset of such a tensor chosen by index (the training images less the validation
split), read the same way, so holding a split out never copies the training set either.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class _MappedFile:
    fd: int
    data_offset: int  # where the array's first byte is in the file


_MAPPED: dict[int, _MappedFile] = {}  # storage address of a mapped array → its file
_LOCK = threading.Lock()


def _forget(address: int, fd: int) -> None:
    with _LOCK:
        if _MAPPED.get(address, _MappedFile(-1, 0)).fd == fd:
            del _MAPPED[address]
    os.close(fd)


def open_mapped(path: str | os.PathLike) -> torch.Tensor:
    """A C-ordered ``.npy`` file as a tensor whose pages stay on disk until read.

    Copy-on-write: a stray in-place edit changes this process's copy, never the file."""
    array = np.load(path, mmap_mode="c", allow_pickle=False)
    tensor = torch.from_numpy(array)
    if array.size:
        fd = os.open(path, os.O_RDONLY)
        address = tensor.untyped_storage().data_ptr()
        with _LOCK:
            _MAPPED[address] = _MappedFile(fd, int(array.offset))
        weakref.finalize(array, _forget, address, fd)  # the tensor keeps the array alive
    return tensor


def is_mapped(images) -> bool:
    """Whether ``images`` (or the tensor a ``Rows`` selects from) is read from a file."""
    if isinstance(images, Rows):
        return True
    return isinstance(images, torch.Tensor) and _file_of(images) is not None


def _file_of(tensor: torch.Tensor) -> _MappedFile | None:
    if tensor.device.type != "cpu" or tensor.ndim == 0:
        return None
    try:
        address = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return _MAPPED.get(address)


def _rows_contiguous(tensor: torch.Tensor) -> bool:
    """Each row (one image) is one contiguous run of bytes (rows may be strided)."""
    if tensor.ndim == 1 or tensor.shape[0] == 0:
        return True
    return tensor[0].is_contiguous()


def take(images, index) -> torch.Tensor:
    """``images[index]`` as a tensor of its own (``index``: a slice or 1-D integer tensor).

    From a file-backed tensor or ``Rows`` the rows are read with ``preadv`` (see the module
    docstring); from an ordinary tensor this is plain indexing."""
    if isinstance(images, Rows):
        return images.take(index)
    mapped = _file_of(images) if isinstance(images, torch.Tensor) else None
    if mapped is None or images.dtype != torch.uint8 or not _rows_contiguous(images):
        return images[index]
    if isinstance(index, slice):
        rows = torch.arange(images.shape[0])[index]
    else:
        rows = torch.as_tensor(index).reshape(-1)
    return _read_rows(images, mapped, rows)


def _read_rows(images: torch.Tensor, mapped: _MappedFile, rows: torch.Tensor) -> torch.Tensor:
    count = int(rows.shape[0])
    out = torch.empty((count, *images.shape[1:]), dtype=images.dtype)
    if count == 0:
        return out
    n = int(images.shape[0])
    rows = torch.where(rows < 0, rows + n, rows)
    if int(rows.min()) < 0 or int(rows.max()) >= n:
        raise IndexError(f"index out of range for {n} images")
    row_bytes = images[0].numel() * images.element_size()
    base = mapped.data_offset + images.storage_offset() * images.element_size()
    stride = images.stride(0) * images.element_size()
    buffer = memoryview(out.numpy()).cast("B")
    positions = rows.tolist()
    start = 0
    while start < count:  # neighbouring rows in one read: a slice of a split is one call
        end = start + 1
        while end < count and positions[end] == positions[end - 1] + 1 and stride == row_bytes:
            end += 1
        want = (end - start) * row_bytes
        view = buffer[start * row_bytes : end * row_bytes]
        offset = base + positions[start] * stride
        got = 0
        while got < want:
            read = os.preadv(mapped.fd, [view[got:]], offset + got)
            if read == 0:
                raise OSError(f"cached images end early (read {got} of {want} bytes)")
            got += read
        start = end
    return out


class Rows:
    """The rows ``index`` of an image tensor, read a batch at a time (``take``), never all at once.

    It answers what the training and evaluation loops ask of a split: ``shape``, ``dtype``,
    ``device``, ``len``, a slice (another ``Rows``) and ``take(index)`` (a tensor)."""

    def __init__(self, source: torch.Tensor, index: torch.Tensor):
        self.source, self.index = source, index.reshape(-1).to(torch.int64)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((int(self.index.shape[0]), *self.source.shape[1:]))

    @property
    def ndim(self) -> int:
        return self.source.ndim

    @property
    def dtype(self) -> torch.dtype:
        return self.source.dtype

    @property
    def device(self) -> torch.device:
        return self.source.device

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, key) -> Rows:
        if not isinstance(key, slice):
            raise TypeError("Rows: index with a slice, or read rows with take(index)")
        return Rows(self.source, self.index[key])

    def take(self, index) -> torch.Tensor:
        return take(self.source, self.index[index])

    def materialize(self) -> torch.Tensor:
        """Every selected row in memory: for a GPU, which holds the training set on the card."""
        return take(self.source, self.index)

    def to(self, device) -> Rows | torch.Tensor:
        """Itself on the CPU (read per batch); a tensor on another device."""
        device = torch.device(device)
        return self if device.type == "cpu" else self.materialize().to(device)


class FloatImages:
    """Images (N, C, H, W) seen as float32 in [0, 1], read and converted a batch at a time.

    A whole test split as floats is four times its uint8 size (a 20,000-image split at 128x128
    is 3.9 GB), so what walks a whole split (the report, evaluation) gets this view instead:
    ``view[i]`` is one float image (C, H, W), ``view[a:b]`` or ``view[indices]`` a float batch,
    ``batches(size)`` the split in order; nothing else is ever read or converted.
    ``source``: uint8 or float images (a tensor, a memory-mapped tensor or ``Rows``);
    ``index``: which of its rows, in which order (None: all, in order)."""

    def __init__(self, source, index: torch.Tensor | None = None):
        self.source = source
        count = int(source.shape[0])
        self.index = torch.arange(count) if index is None else torch.as_tensor(index).reshape(-1).long()

    @property
    def shape(self) -> torch.Size:
        return torch.Size((int(self.index.shape[0]), *self.source.shape[1:]))

    @property
    def ndim(self) -> int:
        return len(self.source.shape)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, key) -> torch.Tensor:
        from convlens.data.bundle import to_float

        if isinstance(key, int | np.integer) or (isinstance(key, torch.Tensor) and key.ndim == 0):
            position = int(key)
            if not -len(self) <= position < len(self):
                raise IndexError(f"image {position} out of range for {len(self)} images")
            return to_float(take(self.source, self.index[position : position + 1 or None]))[0]
        if isinstance(key, slice | torch.Tensor | list | tuple | np.ndarray):
            return to_float(
                take(self.source, self.index[torch.as_tensor(key) if not isinstance(key, slice) else key])
            )
        raise TypeError(
            f"FloatImages: index with an int, a slice or integer indices, not {type(key).__name__}"
        )

    def batches(self, size: int):
        """Float batches of ``size`` images (the last may be smaller), in order."""
        for first in range(0, len(self), size):
            yield self[first : first + size]
