"""What an embedding's directions mean (seed 000 Fig. 10): Pearson r between each principal component of the active
embedding and every galaxy property, as a heatmap; tapping a cell colours every view by that property.

The heatmap and its tap are shared with the image-VAE features (explorer.image_features), whose rows are latent
features instead of principal components.
"""
from __future__ import annotations

from typing import Callable

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from explorer.data import ExplorerData, label
from explorer.state import SelectionState
from precompute import schema

ROW_COLUMNS = ("component", "explained_variance", "feature")  # the tables' columns that are not properties
R_CMAP = "RdBu_r"  # diverging: red positive, blue negative, white uncorrelated


def component_rows(table: pd.DataFrame) -> list[str]:
    """Row names of an embedding's table: "PC1 · 23.4 %" (principal component, explained variance)."""
    return [f"PC{c + 1} · {100 * v:.1f} %" for c, v in zip(table["component"], table["explained_variance"])]


def correlation_frame(table: pd.DataFrame, rows: list[str]) -> pd.DataFrame:
    """One row per (table row, property): `row`, `property` (its label), `column`, Pearson `r`."""
    columns = [c for c in table.columns if c not in ROW_COLUMNS]
    r = table[columns].to_numpy(float)
    # plain object arrays: HoloViews grids a HeatMap by reshaping its columns, which Arrow-backed strings refuse
    text = {"row": np.repeat(np.asarray(rows, object), len(columns)),
            "property": np.tile(np.asarray([label(c) for c in columns], object), len(rows)),
            "column": np.tile(np.asarray(columns, object), len(rows))}
    return pd.DataFrame({**text, "r": r.ravel()}).astype({name: object for name in text})


def correlation_heatmap(frame: pd.DataFrame, title: str, rows_label: str, width: int = 1100) -> hv.HeatMap:
    heatmap = hv.HeatMap(frame, kdims=[hv.Dimension("property", label="Galaxy property"),
                                       hv.Dimension("row", label=rows_label)],
                         vdims=[hv.Dimension("r", label="Pearson r", range=(-1, 1)), "column"])
    rows = list(dict.fromkeys(frame["row"]))
    return heatmap.opts(cmap=R_CMAP, clim=(-1, 1), colorbar=True, colorbar_opts={"title": "Pearson r"},
                        tools=["hover", "tap"], xrotation=60, invert_yaxis=True, title=title, width=width,
                        height=heatmap_height(len(rows)), line_color="white", line_width=0.5)


def heatmap_height(rows: int) -> int:
    """Screen pixels: the rotated property names below take about 260."""
    return 320 + 24 * rows


class CorrelationTable:
    """A correlation heatmap linked to the state: `element()` draws it (rebuilt when a watched state parameter
    changes); a tap on a cell colours the maps by that cell's property."""

    def __init__(self, data: ExplorerData, state: SelectionState, element: Callable[[], hv.HeatMap],
                 follows: tuple[str, ...] = (), css_class: str = "correlation-table"):
        self.data, self.state, self.element = data, state, element
        self.pane = pn.pane.HoloViews(css_classes=[css_class], linked_axes=False)
        self.note = pn.pane.Markdown("Tap a cell to colour the maps by that property.",
                                     styles={"font-size": "12px", "color": "#555"})
        self.view = pn.Column(self.note, self.pane, sizing_mode="stretch_width")
        self._rebuild()
        if follows:
            state.param.watch(self._rebuild, list(follows))

    def _rebuild(self, *_) -> None:
        heatmap = self.element()
        self.frame = heatmap.dframe()
        self.tap = hv.streams.Tap(source=heatmap)
        self.tap.param.watch(self._on_tap, ["x", "y"])
        self.pane.object = heatmap
        self.pane.height = heatmap_height(len(self.frame["row"].unique()))

    def _on_tap(self, *_) -> None:
        cell = self.frame[(self.frame["property"] == self.tap.x) & (self.frame["row"] == self.tap.y)]
        if len(cell) and cell["column"].iat[0] in self.data.colour_columns:
            self.state.colour_by = cell["column"].iat[0]


def embedding_heatmap(data: ExplorerData, embedding: str) -> hv.HeatMap:
    table = data.bundle.read(schema.EMBEDDING_CORRELATION, embedding=embedding)
    return correlation_heatmap(correlation_frame(table, component_rows(table)),
                               f"Principal components of the {embedding} embedding × galaxy properties (Pearson r)",
                               "Principal component · explained variance")


def embedding_correlations(data: ExplorerData, state: SelectionState) -> CorrelationTable:
    """Seed 000 Fig. 10 for the active embedding."""
    return CorrelationTable(data, state, lambda: embedding_heatmap(data, state.embedding), follows=("embedding",),
                            css_class="embedding-correlations")
