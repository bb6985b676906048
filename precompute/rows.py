"""Rows of a .npy file, read and written with plain file I/O instead of a memory map.

Why not a memory map: every page of a map that a process has touched counts in its resident memory until the
kernel takes it back, so one pass over a survey's 4 GB flux file shows (and is accounted, e.g. by a batch
scheduler) as 4 GB of the process, and the dirty pages of a map being written stay there until flushed. Read
and written with pread/pwrite, the same bytes live in the page cache, which the kernel shares between processes
and reclaims freely: a process streaming the survey holds one chunk. The files are ordinary .npy files
(`np.load` reads them); `NpyRows` is what the build's model stages are given for the survey-size arrays.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"{f.name}: .npy format version {version} is not supported")
    shape, fortran_order, dtype = read(f)
    if fortran_order:
        raise ValueError(f"{f.name}: rows of a Fortran-ordered array are not contiguous")
    return shape, dtype, f.tell()


class NpyRows:
    """Read-only rows of a C-ordered .npy file: ``rows[i]``, ``rows[a:b]``, ``rows[indices]`` or ``rows[mask]``
    return in-memory arrays, read with pread; nothing else of the file is held."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self.shape, self.dtype, self._offset = _header(f)
        if not self.shape:
            raise ValueError(f"{self.path}: a 0-d array has no rows")
        self._row_shape = self.shape[1:]
        self._row_bytes = int(np.prod(self._row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self):  # sent to workers as a path: each process opens its own descriptor
        return self.path

    def __setstate__(self, path):
        self.__init__(path)

    def _read(self, start: int, stop: int) -> np.ndarray:
        n = max(stop - start, 0)
        out = np.empty((n, *self._row_shape), self.dtype)
        view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
        position = self._offset + start * self._row_bytes
        while done < n * self._row_bytes:  # pread may return fewer bytes than asked
            got = os.preadv(self._fd, [view[done:]], position + done)
            if got == 0:
                raise ValueError(f"{self.path}: file ends before row {stop} (truncated?)")
            done += got
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows of {self.path}")
            return self._read(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            return self._read(start, stop)
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"boolean index of shape {index.shape} for {len(self)} rows of {self.path}")
            index = np.flatnonzero(index)
        index = index.astype(np.int64).ravel()
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows of {self.path}")
        index = np.where(index < 0, index + len(self), index)
        # one read per run of consecutive rows, in file order; then back to the order asked for
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        out = np.empty((index.size, *self._row_shape), self.dtype)
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for run in np.split(np.arange(ordered.size), breaks):
            if run.size:
                out[order[run]] = self._read(int(ordered[run[0]]), int(ordered[run[-1]]) + 1)
        return out

    def chunks(self, rows: int):
        """(start, array) for consecutive chunks of at most `rows` rows."""
        for start in range(0, len(self), rows):
            yield start, self[start:start + rows]


class NpyRowWriter:
    """A .npy file of a known shape written row block by row block (pwrite), in any order; `close` it."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        with open(self.path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            self._offset = f.tell()
            f.truncate(self._offset + int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_WRONLY)

    def __setitem__(self, key, values) -> None:
        if isinstance(key, (int, np.integer)):
            key = slice(int(key), int(key) + 1)
            values = np.asarray(values)[None]
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise IndexError("rows are written in contiguous blocks")
        block = np.ascontiguousarray(np.broadcast_to(np.asarray(values, self.dtype), (stop - start, *self.shape[1:])))
        data, position = memoryview(block.reshape(-1).view(np.uint8)), self._offset + start * self._row_bytes
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], position + done)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
