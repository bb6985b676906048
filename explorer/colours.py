"""Colour maps: perceptually uniform for numbers (viridis / colorcet), a {category: colour} dict for categories.

Categories get an explicit dict rather than a colour list, so every view (and HoloViews' linked selections,
which mis-assign list colours) shows the same category in the same colour.
"""
from __future__ import annotations

import colorcet as cc
import numpy as np
import pandas as pd

PROPERTY_CMAP = "viridis"
HITS_CMAP = cc.CET_L17  # white → orange → magenta → dark blue: empty nodes fade into the page
UMATRIX_CMAP = cc.CET_L1[::-1]  # white → black: cluster borders (large distances) dark
SELECTION_COLOUR = "#e6194b"
# Outline of SOM nodes picked on a map: cyan, a hue the hit map (white → orange → magenta → blue) never uses,
# where the red of SELECTION_COLOUR would vanish into its salmon and magenta nodes.
PICKED_NODE_COLOUR = "#00b7eb"
EMPTY_COLOUR = "#eeeeee"
# Astronomers read morphology along the Hubble sequence: keep its order, red early types to blue late types.
ORDERED_CATEGORIES = {"morphology": ("E", "S0", "Sa", "Sb", "Sc", "Sd", "Irr", "BCD"),
                      "relevance": ("interesting", "not interesting", "unlabelled")}
FIXED = {
    "morphology": dict(zip(ORDERED_CATEGORIES["morphology"],
                           ("#b2182b", "#d6604d", "#f4a582", "#92c5de", "#4393c3", "#2166ac", "#5aae61", "#762a83"))),
    "quenched": {"True": "#d6604d", "False": "#4393c3"},
    "split": {"train": "#4d4d4d", "val": "#e08214"},
    # the few labelled galaxies stand out; the unlabelled many recede
    "relevance": {"interesting": "#e6194b", "not interesting": "#4363d8", "unlabelled": "#d9d9d9"},
}


def as_categories(values: pd.Series) -> pd.Series:
    """Categorical values as strings (booleans become 'True' / 'False'; missing becomes 'n/a')."""
    return values.astype("string").fillna("n/a").astype(str)


def category_colours(column: str, values: pd.Series) -> dict[str, str]:
    """{category: colour} for every category present, stable across sessions."""
    categories = as_categories(values)
    order = ORDERED_CATEGORIES.get(column)
    present = sorted(set(categories), key=lambda c: (order.index(c) if order and c in order else len(order or ()), c))
    fixed = FIXED.get(column, {})
    palette = iter(c for c in cc.b_glasbey_category10 if c not in fixed.values())
    return {c: fixed.get(c) or next(palette) for c in present}


def finite_range(values) -> tuple[float, float]:
    """Colour limits robust to outliers: the 1st–99th percentile of the finite values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)

# Spectra or galaxies placed by the session on the frozen maps (explorer.place_spectra): white dots, black rims
PLACED_MARK = {"marker": "circle", "size": 9, "fill_color": "white", "line_color": "black", "line_width": 1.5}
PLACED_RENDERER = "placed-spectra"  # the dots' renderer name, on every map that draws them


def add_placed_dots(figure, data: dict, tooltips: list):
    """Draw placed spectra on a rendered Bokeh figure (once: a HoloViews hook may run again) and return their
    ColumnDataSource, which later placements update; None when the figure has them already."""
    from bokeh.models import ColumnDataSource, HoverTool

    if figure.select_one({"name": PLACED_RENDERER}) is not None:
        return None
    source = ColumnDataSource(data)
    dots = figure.scatter("x", "y", source=source, name=PLACED_RENDERER, nonselection_alpha=1.0, **PLACED_MARK)
    figure.add_tools(HoverTool(renderers=[dots], tooltips=tooltips))
    return source
