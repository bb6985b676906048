"""Why a galaxy is unusual: its per-line residuals of the emission-line autoencoder, ranked (what drives its
anomaly score), and for its top lines the data, the reconstruction and the residual maps side by side (where in
the galaxy). Part of the galaxy detail view; absent when the bundle has no `anomaly` section.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn

from explorer.data import ExplorerData
from explorer.state import SelectionState
from precompute import schema

# Line names of anomaly/lines.json ("OIII_5008") in astronomers' notation ("[O III] 5008")
SPECIES = {"Ha": "Hα", "Hb": "Hβ", "Hgam": "Hγ", "Hdel": "Hδ", "Heps": "Hε", "OII": "[O II]", "OIII": "[O III]",
           "NII": "[N II]", "SII": "[S II]", "OI": "[O I]", "NeIII": "[Ne III]", "HeI": "He I", "HeII": "He II"}
MAP_TITLES = ("data", "model", "residual")  # the model: the autoencoder's reconstruction
N_LINES_LISTED = 8


def line_name(name: str) -> str:
    species, _, wave = name.partition("_")
    return f"{SPECIES.get(species, species)} {wave}".strip()


def ranked_lines(data: ExplorerData, g: int) -> list[tuple[str, float]]:
    """(line, residual) of galaxy g, largest residual first; lines without a detection are left out."""
    names = data.bundle.read(schema.ANOMALY_LINES)["names"]
    residuals = np.asarray(data.bundle.read(schema.ANOMALY_LINE_RESIDUALS)[g], float)
    order = [int(i) for i in np.argsort(-residuals, kind="stable") if np.isfinite(residuals[i])]
    return [(line_name(names[i]), float(residuals[i])) for i in order]


def asymmetry_text(row) -> str:
    """The image asymmetry and the share of it in one compact source (a star or a second nucleus, which the score's
    asymmetry masks), or "" for a bundle without them."""
    asymmetry, compact = row.get("asymmetry", np.nan), row.get("compact_asymmetry", np.nan)
    if not (np.isfinite(asymmetry) and np.isfinite(compact)):
        return ""
    return (f" Image asymmetry {asymmetry:.2f} with the brightest compact source masked; that source alone adds "
            f"{compact:.2f} (large for a foreground star or a second nucleus).")


def ranked_lines_text(data: ExplorerData, g: int) -> str:
    row = data.galaxies.iloc[g]
    lines = ranked_lines(data, g)
    if "anomaly_convlstm" in row:  # a combined score: say which part drives it, then the autoencoder's residuals
        driver = schema.ANOMALY_PARTS.get(row.get("anomaly_driver"), row.get("anomaly_driver"))
        head = (f"**Why unusual: {row['galaxy_id']}** — anomaly score {row['anomaly_score']:.2f}, driven most by "
                f"{driver}.{asymmetry_text(row)} Reconstruction error {row['anomaly_convlstm']:.3f}, the mean "
                f"absolute residual over detected voxels (asinh S/N units); per line, largest first:")
    else:  # bundles built before the score was combined: the score is that error
        head = (f"**Why unusual: {row['galaxy_id']}** — anomaly score {row['anomaly_score']:.3f}, the mean "
                f"absolute residual over detected voxels (asinh S/N units); per line, largest first:")
    if not lines:
        return head + "\n\nno emission line detected in this galaxy."
    return head + "\n\n" + "\n".join(f"{i}. {name}: {value:.3f}" for i, (name, value) in
                                      enumerate(lines[:N_LINES_LISTED], 1))


def residual_bars(data: ExplorerData, g: int) -> hv.Bars:
    lines = ranked_lines(data, g)
    return hv.Bars(lines, kdims=[hv.Dimension("line", label="emission line")],
                   vdims=[hv.Dimension("residual", label="mean |residual| (asinh S/N)")]).opts(
        title="Line residuals, ranked", frame_width=330, frame_height=150, xrotation=60, color="#e6194b",
        tools=["hover"], toolbar=None)


def line_maps(data: ExplorerData, g: int) -> hv.Layout | None:
    """Data / reconstruction / residual maps of the galaxy's top lines (one row per line); None when the bundle
    predates these maps."""
    if not (data.path / schema.ANOMALY_TOP_LINE_MAPS.path).exists():
        return None
    names = data.bundle.read(schema.ANOMALY_LINES)["names"]
    residuals = np.asarray(data.bundle.read(schema.ANOMALY_LINE_RESIDUALS)[g], float)
    top = np.asarray(data.bundle.read(schema.ANOMALY_TOP_LINES)[g])
    maps = np.asarray(data.bundle.read(schema.ANOMALY_TOP_LINE_MAPS)[g], float)
    panels = []
    for line, line_maps_ in zip(top, maps):
        if not np.isfinite(residuals[line]):
            continue  # an undetected line explains nothing
        signal = np.nanmax(np.abs(line_maps_[:2])) or 1.0  # data and model on one colour scale
        for title, image in zip(MAP_TITLES, line_maps_):
            clim = (-signal, signal) if title != "residual" else (0, max(np.nanmax(image), 1e-6))
            panels.append(hv.Image(image[::-1], bounds=(0, 0, *image.shape[::-1]), kdims=["x", "y"],
                                   vdims=[hv.Dimension("v", label=title)]).opts(
                title=f"{line_name(names[line])}: {title}", cmap="RdBu_r" if title != "residual" else "magma",
                clim=clim, frame_width=130, frame_height=130, xaxis=None, yaxis=None, colorbar=False,
                fontsize={"title": "9pt"},
                tools=["hover"], toolbar=None))
    return hv.Layout(panels).cols(3).opts(shared_axes=False) if panels else None


class AnomalyExplained:
    """The anomaly explanation of the galaxy in the detail view; follows the focus."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.text = pn.pane.Markdown("", css_classes=["line-residuals"], sizing_mode="stretch_width")
        self.bars = pn.pane.HoloViews(None)
        self.maps = pn.pane.HoloViews(None, css_classes=["line-maps"])
        self.view = pn.Column(self.text, pn.FlexBox(self.bars, self.maps), sizing_mode="stretch_width")
        state.param.watch(self.render, ["focus"])
        self.render()

    def render(self, *_) -> None:
        g = self.state.focus if self.state.focus is not None else 0
        self.text.object = ranked_lines_text(self.data, g)
        self.bars.object = residual_bars(self.data, g) if ranked_lines(self.data, g) else None
        self.maps.object = line_maps(self.data, g)


def anomaly_explained(data: ExplorerData, state: SelectionState) -> AnomalyExplained | None:
    return AnomalyExplained(data, state) if data.bundle.has("anomaly") else None
