"""Place spectra: upload spectra or cubes and see where the bundle's frozen maps put them.

The files go through the code of `python -m precompute assign` (precompute.assign.assign_files on the process-wide
cached FrozenMaps, so a second upload does not load the models again), from a temporary folder removed afterwards:
nothing is written into the bundle. The nodes they land on are marked on the DESOM-1 map, and a cube's DESOM-2 node
on the DESOM-2 map (explorer.som_grid draws `state.placed`); a table lists assign's placement columns, with a CSV
download (assign's CSV, the uploaded file names as `source`); a file or spectrum that could not be placed is named
with its problem. A cube also gets its position on the fingerprint embedding's UMAP, through the projector the bundle
stores (the fitted UMAP's transform), dotted on the galaxy scatter when that embedding is shown; the other
embeddings need the cube models, which placing does not run.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import tempfile
from pathlib import Path

import pandas as pd
import panel as pn

from explorer.data import ExplorerData
from explorer.selection_table import DownloadButton
from explorer.state import SelectionState

ACCEPT = ".fits,.fits.gz,.fit"
# assign's placement columns shown on the page (the CSV download keeps every column, node property medians too)
SHOWN = ["source", "spectrum", "galaxy_id", "node", "bmu_row", "bmu_col", "desom2_node", "sed_node", "sed_kmeans", "qe",
         "recon_error", "coverage", "second_node", "confidence", "error"]
HELP = ("Spectra-set FITS files, SDSS `spec-*.fits` or MaNGA / CALIFA cubes are placed on this bundle's frozen maps "
        "as `python -m precompute assign` places them; a MaNGA cube needs its redshift from a catalogue (drpall "
        "`nsa_z`); a cube is also dotted on the UMAP of the `fingerprint` embedding, a single spectrum on that of "
        "`desom1_latent` when the bundle's objects are single spectra. The files stay out of the bundle. Uploads travel over the page's websocket: over ~15 MB in all "
        "(most MaNGA cubes) needs `panel serve app.py --websocket-max-message-size 200000000`.")


def place_files(bundle_path, files: list[tuple[str, bytes]], catalogue: tuple[str, bytes] | None = None,
                device: str = "cpu") -> pd.DataFrame:
    """assign's table for uploaded files [(name, content)]: one row per binned spectrum, or per file or spectrum
    that could not be placed (`error` names it and says why), with the uploaded names as `source`.

    The files are written to a temporary folder (one subfolder each, so equal names do not collide) that is removed
    on return. A file that breaks assign itself gets an error row rather than stopping the others."""
    # torch: imported when something is placed, never with the page
    from precompute import assign

    frames = []
    with tempfile.TemporaryDirectory(prefix="place-spectra-") as tmp:
        table = None if catalogue is None else _write(Path(tmp) / "catalogue", *catalogue)
        for i, (name, content) in enumerate(files):
            path = _write(Path(tmp) / str(i), name, content)
            try:
                placed = assign.assign_files(str(bundle_path), [path], catalogue=table, device=device)
            except Exception as err:  # say which file and what; the other files still go through
                logging.getLogger(__name__).exception("cannot place %s", name)
                placed = pd.DataFrame([{"source": str(path), "error": f"{type(err).__name__}: {err}"}])
            frames.append(_named(placed, str(path), name))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=assign.COLUMNS)
    out = out.reindex(columns=list(dict.fromkeys([*assign.COLUMNS, *out.columns])))  # all failed: no node columns
    out["error"] = out["error"].fillna("") if "error" in out else ""
    return out[[c for c in out.columns if c != "error"] + ["error"]]


def _write(folder: Path, name: str, content: bytes) -> Path:
    """The upload as a file of its own name (readers and error messages see that name) in `folder`."""
    folder.mkdir()
    path = folder / (Path(name).name or "upload")
    path.write_bytes(content)
    return path


def _named(placed: pd.DataFrame, path: str, name: str) -> pd.DataFrame:
    """The temporary path replaced by the uploaded file's name; every error starts with the file (or spectrum)."""
    placed = placed.assign(source=name)
    folder = os.path.dirname(path) + os.sep
    errors = placed["error"].fillna("").astype(str).str.replace(path, name, regex=False)
    errors = errors.str.replace(folder, "", regex=False)
    placed["error"] = [e if not e or e.startswith(name) else f"{name}: {e}" for e in errors]
    return placed


def shown_table(placed: pd.DataFrame) -> pd.DataFrame:
    """The placement columns as the page shows them (integers with blanks where a row was not placed)."""
    frame = placed[[c for c in SHOWN if c in placed]].copy()
    for column in ("spectrum", "node", "bmu_row", "bmu_col", "desom2_node", "sed_node", "sed_kmeans", "second_node"):
        if column in frame:
            values = pd.to_numeric(frame[column], errors="coerce")
            frame[column] = pd.Series([None if pd.isna(v) else int(v) for v in values], frame.index, object)
    return frame.astype(object).where(frame.notna(), None)  # a blank, not NaN, where a row was not placed


def summary(placed: pd.DataFrame, files: list[str]) -> str:
    """One line: what was placed, and how many files or spectra were not."""
    failed = placed["error"] != ""
    bad_files = sorted(set(placed.loc[failed, "source"]) - set(placed.loc[~failed, "source"]))
    n_placed = int((~failed).sum())
    text = (f"**{n_placed:,} spectra placed** from {len(files) - len(bad_files)} of {len(files)} "
            f"file{'s' if len(files) > 1 else ''}" + (", marked by white dots on the maps" if n_placed else ""))
    if failed.any():
        text += f"; {int(failed.sum())} not placed (below)"
    return text + (". Tap a row to select its DESOM-1 node." if n_placed else ".")


class PlaceSpectra:
    """Upload → assign on the frozen maps (in a thread, with a status line) → marks, table, CSV, problems."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.upload = pn.widgets.FileInput(multiple=True, accept=ACCEPT, css_classes=["place-upload"])
        self.catalogue = pn.widgets.FileInput(accept=".fits,.fit,.fits.gz,.csv,.parquet,.vot,.xml",
                                              css_classes=["place-catalogue"], width=260)
        self.clear = pn.widgets.Button(label="Clear placed spectra", color="warning", variant="outline",
                                       disabled=True)
        self.clear.on_click(lambda _: self.show(None))
        self.status = pn.pane.Markdown("Choose files to place.", css_classes=["place-status"], margin=(0, 10))
        self.busy = pn.indicators.LoadingSpinner(value=False, visible=False, width=22, height=22, margin=(8, 0))
        self.problems = pn.pane.Alert("", alert_type="warning", visible=False, css_classes=["place-problems"])
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=SHOWN), pagination="remote", page_size=8,
                                          disabled=True, show_index=False, sizing_mode="stretch_width",
                                          visible=False, css_classes=["place-table"],
                                          formatters={c: {"type": "money", "precision": 3, "symbol": ""}
                                                      for c in ("qe", "recon_error", "coverage", "confidence")})
        self.table.on_click(self._on_click)
        self.download = DownloadButton(callback=self._csv, filename="placed.csv", label="Download placements (CSV)",
                                       color="primary", variant="outline", width=230, embed=False, disabled=True)
        self.upload.param.watch(self._on_upload, "value", onlychanged=False)  # the same files again: again
        self.view = pn.Column(
            pn.pane.Markdown(HELP, styles={"font-size": "12px", "color": "#555"}),
            pn.Row(pn.Column("Spectra or cubes", self.upload),
                   pn.Column("Catalogue with redshifts (optional)", self.catalogue), self.clear),
            pn.Row(self.busy, self.status), self.problems, self.table, self.download, sizing_mode="stretch_width",
            css_classes=["place-spectra"])

    def uploads(self) -> list[tuple[str, bytes]]:
        """The chosen files as [(name, content)]."""
        values, names = self.upload.value, self.upload.filename
        if not values:
            return []
        if not isinstance(values, list):
            values, names = [values], [names]
        return [(name or f"upload-{i}", value) for i, (name, value) in enumerate(zip(names, values))]

    def place(self, files: list[tuple[str, bytes]]) -> pd.DataFrame:
        """Place `files` (blocking) with the chosen catalogue; the result goes to the page with `show`."""
        chosen = self.catalogue.value
        catalogue = (self.catalogue.filename or "catalogue", chosen) if chosen else None
        return place_files(self.data.path, files, catalogue)

    async def _on_upload(self, *_) -> None:
        files = self.uploads()
        if not files:
            return
        names = ", ".join(name for name, _ in files)
        self.status.object = f"Placing {names} on the bundle's frozen maps …"
        self.upload.disabled = self.busy.value = self.busy.visible = self.table.loading = True
        try:  # in a thread: the server keeps serving this page (and the others) while cubes are binned and placed
            placed = await asyncio.to_thread(self.place, files)
        except Exception as err:
            logging.getLogger(__name__).exception("cannot place %s", names)
            self.status.object = f"Could not place {names}: {type(err).__name__}: {err}"
            return
        finally:
            self.upload.disabled = self.busy.value = self.busy.visible = self.table.loading = False
        with pn.io.hold():  # outside the document lock: the hold sends the marks' data source changes
            self.show(placed)

    def show(self, placed: pd.DataFrame | None) -> None:
        """The placement on the page: marks on the maps (state), the table, the problems, the download."""
        self.state.placed = placed
        empty = placed is None or placed.empty
        self.table.value = pd.DataFrame(columns=SHOWN) if empty else shown_table(placed)
        self.table.visible = not empty
        self.download.disabled = self.clear.disabled = empty
        failed = [] if empty else list(placed.loc[placed["error"] != "", "error"])
        self.problems.object = "\n".join(f"- {error}" for error in failed)
        self.problems.visible = bool(failed)
        self.status.object = ("Choose files to place." if empty
                              else summary(placed, list(dict.fromkeys(placed["source"]))))

    @property
    def placed(self) -> pd.DataFrame | None:
        """assign's table of the latest upload (every column), None before one or after Clear."""
        return self.state.placed

    def csv(self) -> str:
        return "" if self.placed is None else self.placed.to_csv(index=False)

    def _csv(self) -> io.BytesIO:
        return io.BytesIO(self.csv().encode())

    def _on_click(self, event) -> None:
        node = self.table.value["node"].iat[event.row]
        if node is not None:
            self.state.select_nodes([int(node)])
