"""What to look at next: the galaxies not yet reviewed, ranked by anomaly score × relevance learned from the
labels (precompute.rank, the function `python -m precompute rank` uses) in a feature space the user picks (the
anomaly score's parts by default, or an embedding), as a gallery with their scores. It re-ranks after every label
of this session and when the space changes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn

from explorer.data import ExplorerData
from explorer.gallery import ThumbnailGrid
from explorer.state import SelectionState
from precompute.rank import rank_bundle, relevance_spaces

SHOWN = 12


def ranked(data: ExplorerData, space: str) -> pd.DataFrame:
    """The ranked list of the bundle (best first; see precompute.rank for the columns)."""
    return rank_bundle(data.bundle, data.labels, space)


def card_caption(rank: int, row) -> str:
    """Three short lines, so the caption fits under a thumbnail: rank and score, then its two factors."""
    return f"#{rank} score {row.score:.2f}\nanomaly {row.anomaly_percentile:.2f}\nrelevance {row.relevance:.2f}"


class WhatNext:
    """A gallery of the top of the ranked list; clicking a galaxy opens it in the detail view."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.grid = ThumbnailGrid(state)
        self.header = pn.pane.Markdown("", css_classes=["what-next-header"], margin=(0, 8))
        spaces = relevance_spaces(data.bundle)
        self.space = pn.widgets.Select(label="Relevance learned in", options=spaces, value=spaces[0], width=220)
        self.view = pn.Column(self.header, self.space, self.grid,
                              css_classes=["what-next"], sizing_mode="stretch_width")
        state.param.watch(self.render, ["labels_changed"])
        self.space.param.watch(self.render, "value")
        self.render()

    def render(self, *_) -> None:
        frame = ranked(self.data, self.space.value)
        n_labelled = int(np.isfinite(self.data.labels.relevance()).sum())
        self.header.object = (f"**What to look at next** — {len(frame):,} galaxies not yet reviewed, ranked by "
                              f"anomaly percentile × 2 · relevance learned from {n_labelled} labelled interesting "
                              f"or not, in the {self.space.value} space")
        top = list(frame.head(SHOWN).itertuples())
        self.grid.show(self.data, [row.g for row in top], [card_caption(i + 1, row) for i, row in enumerate(top)])
