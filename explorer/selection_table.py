"""Selection table (sortable, paged on the server) and export of the whole selection as CSV, FITS or VOTable.

Every export carries the bundle id, the model config hash and how the selection was made: the CSV as an ECSV
header (astropy's commented YAML lines, which TOPCAT and `pandas.read_csv(comment='#')` read), FITS as header
keywords, VOTable as INFO elements.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import panel as pn
from astropy.table import Table

from explorer.data import KEY_COLUMNS, ExplorerData
from explorer.state import SelectionState

FORMATS = {"csv": "text/csv", "fits": "application/fits", "vot": "application/x-votable+xml"}
DROP_FROM_EXPORT = ("thumbnail",)


class DownloadButton(pn.widgets.FileDownload):
    """Panel's FileDownload whose ``color`` reaches the page: Panel 1.9 drops it (holoviz/panel#8653), and an
    export button then looks like the disabled ones."""

    _rename = {**pn.widgets.FileDownload._rename, "color": "button_type"}


def selection_frame(data: ExplorerData, galaxies: np.ndarray) -> pd.DataFrame:
    """Every property of the selected galaxies, one row each, in survey order."""
    return data.galaxies.iloc[np.sort(galaxies)].drop(columns=list(DROP_FROM_EXPORT), errors="ignore")


def table_columns(data: ExplorerData) -> list[str]:
    """Columns shown on screen (all columns still go into exports)."""
    extra = ["split", "desom2_node", "n_bins", "ra", "dec"]
    return ["galaxy_id"] + [c for c in (*KEY_COLUMNS, *extra) if c in data.galaxies.columns]


def export_table(data: ExplorerData, state: SelectionState) -> Table:
    frame = selection_frame(data, state.selected)
    table = Table.from_pandas(frame.reset_index(drop=True))
    manifest = data.bundle.manifest
    table.meta.update({
        "bundle_id": manifest["bundle_id"],
        "config_hash": manifest["config_hash"],
        "selection": state.how,
        "n_selected": len(frame),
    })
    return table


def to_csv(table: Table) -> bytes:
    buffer = io.StringIO()
    table.write(buffer, format="ascii.ecsv", delimiter=",")
    return buffer.getvalue().encode()


def to_fits(table: Table) -> bytes:
    out = table.copy(copy_data=False)
    # FITS keywords are at most 8 characters and values at most 68: long selections go to HISTORY lines
    selection = out.meta.pop("selection")
    out.meta = {"BUNDLEID": out.meta["bundle_id"], "CFGHASH": out.meta["config_hash"],
                "NSELECT": out.meta["n_selected"],
                "HISTORY": [f"selection: {selection}"[i:i + 70] for i in range(0, len(selection) + 11, 70)]}
    buffer = io.BytesIO()
    out.write(buffer, format="fits")
    return buffer.getvalue()


def to_votable(table: Table) -> bytes:
    from astropy.io.votable.tree import Info, VOTableFile

    out = table.copy(copy_data=False)
    meta, out.meta = dict(out.meta), {}
    votable = VOTableFile.from_table(out)
    for key, value in meta.items():
        votable.resources[0].infos.append(Info(name=key, value=str(value)))
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return buffer.getvalue()


def export_bytes(data: ExplorerData, state: SelectionState, fmt: str) -> bytes:
    writers = {"csv": to_csv, "fits": to_fits, "vot": to_votable}
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(writers)}")
    return writers[fmt](export_table(data, state))


class SelectionTable:
    """The selection as a sortable table (only the visible page travels to the browser) plus export buttons."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.columns = table_columns(data)
        self.count = pn.pane.Markdown("", css_classes=["selection-count"], margin=(0, 10))
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=self.columns), pagination="remote", page_size=10, disabled=True,
            show_index=False, sizing_mode="stretch_width", height=330,
            formatters={c: {"type": "money", "precision": 3, "symbol": ""} for c in self.columns
                        if pd.api.types.is_float_dtype(data.galaxies[c])},
        )
        self.table.on_click(self._on_click)
        self.downloads = [
            DownloadButton(callback=lambda f=fmt: io.BytesIO(export_bytes(data, state, f)),
                           filename=f"selection.{fmt}", label=f"Download {name}", color="primary", variant="outline",
                           width=150, embed=False)
            for fmt, name in (("csv", "CSV"), ("fits", "FITS"), ("vot", "VOTable"))
        ]
        self.view = pn.Column(self.count, self.table, pn.Row(*self.downloads), sizing_mode="stretch_width")
        state.param.watch(self.render, ["galaxies"])
        self.render()

    def render(self, *_) -> None:
        frame = self.data.galaxies[self.columns].iloc[self.state.selected]  # state indices are sorted
        self.table.value = frame.reset_index(drop=True)
        self.count.object = f"**{len(frame):,} galaxies selected** — {self.state.how}"

    def _on_click(self, event) -> None:
        gid = self.table.value["galaxy_id"].iat[event.row]
        self.state.focus = int(self.data.index_of[gid])
