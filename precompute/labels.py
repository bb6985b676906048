"""Labels that astronomers give galaxies while exploring: an append-only log beside the bundle.

A labels file holds one JSON object per line, one per labelling act (an *event*):

    {"event": "3f…", "time": "2025-…Z", "action": "add", "label": "interesting", "galaxies": ["1-101", …],
     "bundle_id": "demo-…", "author": "jdoe", "how": "DESOM-2 node (1, 2)"}

``action`` is ``add`` or ``remove`` (the label for those galaxies) or ``undo`` (``undoes``: the id of an earlier
event, which then counts as never made). Two labels are the relevance labels, ``interesting`` and
``not interesting``, exclusive (the later one wins); any other label is a free tag (a sample name), and a galaxy
can carry many. The file lives *beside* the bundle (``<bundle>.labels.jsonl``), not inside it, because a rebuild
swaps the bundle folder whole; galaxies are named by ``galaxy_id``, so labels survive rebuilds, and each event
records the ``bundle_id`` it was made on.

Durability: an event is one ``write`` of one whole line to a file opened with O_APPEND under an exclusive
``flock`` (the dashboard and scripts may append at once), followed by ``fsync`` before `LabelLog.append`
returns: an acknowledged label survives a killed server (and a power cut). A line cut short by a crash while it
was being written is skipped on reading with a warning, and the next append starts on a new line.

Several writers: every `LabelLog` of a file replays what the others appended — before its own append (under the
lock, so all of them hold the events in the file's order) and on `LabelLog.refresh` (the dashboard calls it when a
page opens) — so two server processes, or a server and a script, share one set of labels.

Imported by the dashboard (explorer/) and by ``python -m precompute rank``; no Panel here.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import getpass
import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

INTERESTING, NOT_INTERESTING = "interesting", "not interesting"
RELEVANCE = (INTERESTING, NOT_INTERESTING)
UNLABELLED = "unlabelled"
ACTIONS = ("add", "remove", "undo")
SUFFIX = ".labels.jsonl"
AUTHOR_ENV = "GALAXY_EXPLORER_AUTHOR"


def labels_path(bundle_path: str | os.PathLike) -> Path:
    """The labels file of a bundle: ``data/bundles/demo`` → ``data/bundles/demo.labels.jsonl``."""
    bundle_path = Path(bundle_path)
    return bundle_path.with_name(bundle_path.name + SUFFIX)


def author() -> str:
    """Who labels: $GALAXY_EXPLORER_AUTHOR, else the login name of the process."""
    if os.environ.get(AUTHOR_ENV):
        return os.environ[AUTHOR_ENV]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "unknown"


class LabelError(ValueError):
    """A label that cannot be recorded (empty name, unknown galaxy); the message names the file and the problem."""


class LabelLog:
    """The events of one labels file, and the labels they give each galaxy.

    ``LabelLog(path, galaxy_ids, bundle_id)`` reads the file (a missing file is an empty log); `append` records an
    event durably and applies it; `refresh` applies what other writers appended since. Galaxy ids not in
    ``galaxy_ids`` (labelled on another bundle) are kept in the file and counted in ``unknown_ids`` but label
    nothing here."""

    def __init__(self, path: str | os.PathLike, galaxy_ids, bundle_id: str):
        self.path = Path(path)
        self.galaxy_ids = np.asarray(galaxy_ids, dtype=object)
        self.index = {gid: g for g, gid in enumerate(self.galaxy_ids)}
        self.bundle_id = bundle_id
        self._forget()
        self.refresh()

    def _forget(self) -> None:
        self.events: list[dict] = []
        self.unknown_ids: set[str] = set()
        self._undone: set[str] = set()
        self._labels: dict | None = None  # {label: mask}, replayed from the events when asked
        self._file: tuple[int, int] | None = None  # (device, inode) of the file read
        self._read_to = 0  # bytes of it replayed
        self._lines = 0  # lines of it seen (for the warnings)
        self._cut = False  # the last line read had no end: a writer was killed mid-line

    def refresh(self) -> bool:
        """Replay the events other writers appended since this log last read the file (another server process,
        a script, a colleague's dashboard on the same bundle); True when the labels may have changed. The file is
        read under a shared lock, so a line another writer is appending is never read half-written; a file
        removed or replaced is read from scratch."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            changed = self._read_to > 0
            self._forget()
            return changed
        with handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            return self._replay(handle.fileno())

    def _replay(self, fd: int) -> bool:
        """Apply the lines of the open file ``fd`` after the ones already replayed (all of them, from scratch, when
        the file was replaced or shortened); a line that is not an event is skipped with a warning. True when
        anything was applied or forgotten."""
        stat = os.fstat(fd)
        forgotten = self._file not in (None, (stat.st_dev, stat.st_ino)) or stat.st_size < self._read_to
        if forgotten:
            self._forget()
        self._file = (stat.st_dev, stat.st_ino)
        text = os.pread(fd, stat.st_size - self._read_to, self._read_to).decode("utf-8", errors="replace")
        self._read_to = stat.st_size
        ended = "\n" in text
        *lines, tail = text.split("\n")
        if self._cut:  # the rest of a line cut short, already skipped (an append starts a new line: normally "")
            lines, tail = (lines[1:], tail) if ended else ([], "")
        self._cut = bool(tail) if ended else self._cut or bool(tail)
        applied = 0
        for line in [*lines, *([tail] if tail else [])]:
            self._lines += 1
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                _check_event(event)
            except (json.JSONDecodeError, LabelError) as err:
                warnings.warn(f"{self.path}: line {self._lines} skipped ({err})", stacklevel=3)
                continue
            self._apply(event)
            applied += 1
        return forgotten or applied > 0

    # -- recording -------------------------------------------------------------------------------------------------
    def add(self, label: str, galaxies, how: str = "") -> dict:
        """Give ``label`` to galaxies (indices g); a relevance label replaces the other one."""
        return self.append(self._event("add", label, galaxies, how))

    def remove(self, label: str, galaxies, how: str = "") -> dict:
        return self.append(self._event("remove", label, galaxies, how))

    def undo(self, event_id: str) -> dict:
        """Cancel an earlier event (append-only: the undo is itself an event)."""
        if event_id not in {e["event"] for e in self.events}:
            raise LabelError(f"{self.path}: no event {event_id!r} to undo")
        return self.append({**self._stamp(), "action": "undo", "undoes": event_id})

    def append(self, event: dict) -> dict:
        """Write one event as one line, durably (see the module); the lines other writers appended before it and
        the event itself are then replayed from the file, so every log of the file holds the events in its order.
        Returns the event."""
        _check_event(event)
        line = (json.dumps(event, ensure_ascii=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a crash cut the previous line short: start a new one
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{self.path}: wrote {written} of {len(line)} bytes (disk full?)")
            os.fsync(fd)
            self._replay(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return event

    def _stamp(self) -> dict:
        return {"event": uuid.uuid4().hex, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
                "bundle_id": self.bundle_id, "author": author()}

    def _event(self, action: str, label: str, galaxies, how: str) -> dict:
        label = " ".join(str(label).split())
        if not label:
            raise LabelError(f"{self.path}: a label needs a name")
        galaxies = np.unique(np.asarray(galaxies, dtype=np.int64))
        if galaxies.size == 0:
            raise LabelError(f"{self.path}: no galaxies to label {label!r}")
        if galaxies.min() < 0 or galaxies.max() >= len(self.galaxy_ids):
            raise LabelError(f"{self.path}: galaxy index outside 0..{len(self.galaxy_ids) - 1}")
        return {**self._stamp(), "action": action, "label": label,
                "galaxies": self.galaxy_ids[galaxies].tolist(), "how": how}

    def _apply(self, event: dict) -> None:
        self.events.append(event)
        if event["action"] == "undo":
            self._undone.add(event["undoes"])
        else:
            self.unknown_ids.update(gid for gid in event["galaxies"] if gid not in self.index)
        self._labels = None  # recomputed on the next read

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> dict[str, np.ndarray]:
        """{label: boolean mask over the galaxies} for every label some galaxy carries now (events replayed in
        order, undone ones left out; a relevance label clears the other)."""
        if self._labels is None:
            n = len(self.galaxy_ids)
            masks: dict[str, np.ndarray] = {}
            for event in self.events:
                if event["action"] == "undo" or event["event"] in self._undone:
                    continue
                rows = [self.index[gid] for gid in event["galaxies"] if gid in self.index]
                label = event["label"]
                if event["action"] == "add" and label in RELEVANCE:
                    other = RELEVANCE[1 - RELEVANCE.index(label)]
                    masks.setdefault(other, np.zeros(n, bool))[rows] = False
                masks.setdefault(label, np.zeros(n, bool))[rows] = event["action"] == "add"
            self._labels = {label: mask for label, mask in masks.items() if mask.any()}
        return self._labels

    @property
    def tags(self) -> list[str]:
        """Free tags in use, sorted."""
        return sorted(label for label in self.labels if label not in RELEVANCE)

    def relevance(self) -> np.ndarray:
        """Per galaxy: 1 = interesting, 0 = not interesting, NaN = no relevance label."""
        out = np.full(len(self.galaxy_ids), np.nan)
        for value, label in ((1.0, INTERESTING), (0.0, NOT_INTERESTING)):
            if label in self.labels:
                out[self.labels[label]] = value
        return out

    def columns(self) -> dict[str, np.ndarray]:
        """Galaxy columns for views and exports: ``relevance`` (interesting / not interesting / unlabelled) and
        ``tags`` (the galaxy's tags, sorted, joined by "; "; "" when none)."""
        relevance = np.full(len(self.galaxy_ids), UNLABELLED, dtype=object)
        for label in RELEVANCE:
            if label in self.labels:
                relevance[self.labels[label]] = label
        tags = [[] for _ in range(len(self.galaxy_ids))]
        for tag in self.tags:
            for g in np.flatnonzero(self.labels[tag]):
                tags[g].append(tag)
        return {"relevance": relevance, "tags": np.array(["; ".join(t) for t in tags], dtype=object)}


def _check_event(event: dict) -> None:
    if not isinstance(event, dict) or event.get("action") not in ACTIONS or "event" not in event:
        raise LabelError(f"not a label event: {str(event)[:80]}")
    if event["action"] == "undo":
        if not isinstance(event.get("undoes"), str):
            raise LabelError("an undo event needs 'undoes' (the id of the event it cancels)")
    elif not (isinstance(event.get("label"), str) and event["label"] and isinstance(event.get("galaxies"), list)):
        raise LabelError("an add/remove event needs a 'label' and a list of 'galaxies'")
