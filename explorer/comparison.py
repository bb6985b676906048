"""Population comparison (seed 000): pin a selection as A, select B, compare their typicality distributions in
the chosen embedding with a two-sample Kolmogorov–Smirnov test.

A galaxy's typicality is its distance to its 10th nearest training galaxy (`precompute.compare.typicality`, the
same function as `python -m precompute compare` and the bundle's metrics): populations that sit in equally dense
parts of the embedding have the same distribution. The twins switch keeps only the galaxies of A and B that have a
twin in the other population (same morphology, stellar mass within 0.2 dex: `precompute.compare.twins`, as
`compare --twins`, seed 000 Fig. 9), so a difference cannot come from mass or morphology alone.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn

from explorer.data import ExplorerData
from explorer.state import SelectionState
from precompute.compare import TWIN_MASS_DEX, compare_distances, twins, typicality

K = 10


def twin_populations(data: ExplorerData, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The galaxies g of A and of B with a mass/morphology twin in the other population."""
    a_twins, b_twins = twins(data.galaxies, data.galaxy_mask(a), data.galaxy_mask(b))
    return np.flatnonzero(a_twins), np.flatnonzero(b_twins)


def compare(data: ExplorerData, embedding: str, a: np.ndarray, b: np.ndarray, k: int = K,
            only_twins: bool = False) -> dict:
    """KS statistic and p-value of the two populations' typicality (NaN when either has < 2 galaxies); with
    `only_twins`, of their mass/morphology twins."""
    if only_twins:
        a, b = twin_populations(data, a, b)
    distance = data.knn_distance(embedding)
    da, db = typicality(distance, a, k), typicality(distance, b, k)
    if len(da) < 2 or len(db) < 2:
        return {"a": da, "b": db, "statistic": np.nan, "pvalue": np.nan}
    result = compare_distances(da, db)
    return {"a": da, "b": db, "statistic": result["ks"], "pvalue": result["p_value"]}


def comparison_plot(result: dict, embedding: str) -> hv.Overlay:
    both = np.concatenate([result["a"], result["b"]])
    edges = np.histogram_bin_edges(both, bins=20) if both.size else np.linspace(0, 1, 21)
    kx = hv.Dimension("d", label=f"distance to the {K}th nearest training galaxy ({embedding})")
    overlay = hv.Overlay()
    for key, colour, name in (("a", "#1b9e77", "A (pinned)"), ("b", "#d95f02", "B (current selection)")):
        counts, _ = np.histogram(result[key], bins=edges, density=True)
        overlay *= hv.Histogram((edges, counts), kdims=[kx], vdims=["density"], label=f"{name}: {len(result[key])}").opts(
            fill_color=colour, fill_alpha=0.3, line_color=colour, line_width=1.5)
    return overlay.opts(hv.opts.Overlay(title=ks_text(result), responsive=True, min_height=300,
                                        legend_position="top_right"))


def ks_text(result: dict) -> str:
    return (f"KS D = {result['statistic']:.3f}, p = {result['pvalue']:.3g}" if np.isfinite(result["statistic"])
            else "KS test needs at least 2 galaxies in A and in B")


class Comparison:
    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.pin = pn.widgets.Button(label="Pin selection as A", color="primary", variant="outline")
        self.pin.on_click(lambda _: state.pin())
        self.twins = pn.widgets.Switch(value=False, visible={"log_mstar", "morphology"} <= set(data.galaxies),
                                       css_classes=["twins-switch"])
        self.twins.param.watch(self.render, "value")
        twins_text = pn.pane.Markdown(f"only mass/morphology twins (same type, M★ within {TWIN_MASS_DEX} dex)",
                                      visible=self.twins.visible, margin=(8, 5))
        self.summary = pn.pane.Markdown("", css_classes=["comparison-summary"])
        self.plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=300)
        self.view = pn.Column(pn.Row(self.pin, self.twins, twins_text), self.summary, self.plot,
                              sizing_mode="stretch_width")
        state.param.watch(self.render, ["pinned", "galaxies", "embedding"])
        self.render()

    def render(self, *_) -> None:
        if self.state.pinned is None or not self.state.embedding:
            self.summary.object = ("Select a population and pin it as **A**, then select **B**: their "
                                   f"distances to their {K}th nearest training galaxy are compared with a KS test.")
            self.plot.object = None
            return
        a, b = self.state.pinned, self.state.selected
        result = compare(self.data, self.state.embedding, a, b, only_twins=self.twins.value)
        a_text, b_text = f"{len(a):,} galaxies ({self.state.pinned_how})", f"{len(b):,} galaxies ({self.state.how})"
        if self.twins.value:
            a_text += f", {len(result['a']):,} with a twin in B"
            b_text += f", {len(result['b']):,} with a twin in A"
        self.summary.object = f"**A**: {a_text} · **B**: {b_text} · {ks_text(result)}"
        self.plot.object = comparison_plot(result, self.state.embedding)
