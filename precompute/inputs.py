"""The inputs of a build: files, directories (searched for FITS files, at any depth) and glob patterns, resolved
into one sorted list of files, and the record of that list that a bundle keeps."""
from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
LISTED_UP_TO = 50  # a longer list goes to the bundle's side file inputs.txt instead of the manifest


class InputsError(ValueError):
    """An input that names nothing: a missing file or directory, or a pattern matching no file."""


def is_fits_name(path: str | Path) -> bool:
    return str(path).lower().endswith(FITS_SUFFIXES)


def resolve_inputs(entries, exclude=()) -> tuple[list[str], list[str]]:
    """(files, skipped): every file named by `entries`, sorted and each once, so a glob and the same files listed by
    hand give the same bundle; `skipped` has one line per file of a searched directory that is not a FITS file.
    Files in `exclude` (the catalogue) are left out. InputsError lists every entry that names nothing."""
    exclude = {os.path.abspath(p) for p in exclude if p}
    files, skipped, problems = set(), [], []
    for entry in map(str, entries):
        if os.path.isdir(entry):
            for path in sorted(p for p in Path(entry).rglob("*") if p.is_file() and not p.name.startswith(".")):
                if is_fits_name(path):
                    files.add(str(path))
                else:
                    skipped.append(f"{path}: not a FITS file (directory {entry} is searched for FITS files)")
        elif glob.has_magic(entry):
            matches = [p for p in glob.glob(entry, recursive=True) if os.path.isfile(p)]
            if not matches:
                problems.append(f"{entry}: the pattern matches no file")
            files.update(matches)
        elif os.path.isfile(entry):
            files.add(entry)
        else:
            problems.append(f"{entry}: no such file or directory")
    if problems:
        raise InputsError("\n".join(problems))
    return sorted(f for f in files if os.path.abspath(f) not in exclude), skipped


def inputs_record(files: list[str]) -> dict:
    """What a bundle records of its inputs: count, total size, a hash of the sorted paths, and the paths themselves
    when few (else `inputs.txt`, written beside the manifest)."""
    digest = hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()[:16]
    record = {"count": len(files), "bytes": sum(os.path.getsize(f) for f in files), "paths_sha256": digest}
    record["files"] = list(files) if len(files) <= LISTED_UP_TO else "inputs.txt"
    return record
