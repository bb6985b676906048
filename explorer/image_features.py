"""What the image VAE learned (seed 004): for each latent feature, images decoded while it sweeps from its 2nd to
its 98th percentile (the others at their median); the features × properties correlations; and the galaxies in the
plane of the two features that best separate morphological types, coloured by the colour-by property, where a box
or lasso selects galaxies.
"""
from __future__ import annotations

import io

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
from PIL import Image

from explorer.correlations import CorrelationTable, correlation_frame, correlation_heatmap
from explorer.data import ExplorerData, label
from explorer.scatter import GalaxyScatter, galaxy_points
from explorer.state import SelectionState
from precompute import schema

EMBEDDING = "image_vae"  # the embedding the image VAE writes (its latent means)
MORPHOLOGY = "morphology"
TILE = 44  # screen pixels per decoded image in a traversal strip
GAP = 2
LABEL_WIDTH = 170
PLANE_WIDTH, PLANE_HEIGHT = 540, 420


def traversal_strip(images: np.ndarray, low: float, high: float) -> bytes:
    """One feature's decoded images [n_steps, S, S] side by side as a PNG (grey, `low`–`high` → black–white: one
    stretch for every strip, so strips compare)."""
    scaled = np.clip((images - low) / max(high - low, 1e-12), 0, 1)
    tiles = [Image.fromarray((255 * tile).astype(np.uint8)).resize((TILE, TILE), Image.BILINEAR) for tile in scaled]
    strip = Image.new("L", (len(tiles) * (TILE + GAP) - GAP, TILE), 255)
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * (TILE + GAP), 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return buffer.getvalue()


def feature_table(data: ExplorerData) -> pd.DataFrame:
    return data.bundle.read(schema.IMAGE_VAE_CORRELATION)


def strongest_property(table: pd.DataFrame, feature: int) -> tuple[str, float] | None:
    """The property a feature correlates with most (|Pearson r|), or None when every r is NaN."""
    r = table.drop(columns=["feature"]).iloc[feature].astype(float)
    if r.isna().all():
        return None
    column = r.abs().idxmax()
    return column, float(r[column])


def morphology_separation(latent: np.ndarray, morphology: pd.Series) -> np.ndarray:
    """Per feature, the correlation ratio η² over morphological types: the share of the feature's variance
    between the types' means (1 = types fully separated, 0 = no difference)."""
    kinds = morphology.astype(str).to_numpy()
    centred = latent - latent.mean(axis=0)
    between = sum((kinds == k).sum() * (latent[kinds == k].mean(axis=0) - latent.mean(axis=0)) ** 2
                  for k in np.unique(kinds))
    return between / np.maximum((centred ** 2).sum(axis=0), 1e-12)


def plane_features(data: ExplorerData, latent: np.ndarray) -> tuple[int, int]:
    """The two features that best separate morphology (the first two when the survey has no morphology)."""
    if MORPHOLOGY not in data.galaxies or latent.shape[1] < 2:
        return 0, min(1, latent.shape[1] - 1)
    order = np.argsort(-morphology_separation(latent, data.galaxies[MORPHOLOGY]))
    return int(order[0]), int(order[1])


class LatentPlane(GalaxyScatter):
    """The galaxies in the plane of two image-VAE features: the galaxy scatter's colours, hover and linked
    selection, on latent coordinates instead of UMAP ones."""

    css_class = "latent-plane"
    shows_placed = False  # placed galaxies have no image-VAE latent

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.latent = np.asarray(data.bundle.read(schema.EMBEDDING_VECTORS, embedding=EMBEDDING), float)
        self.features = plane_features(data, self.latent)
        super().__init__(data, state)
        self.pane.param.update(sizing_mode="fixed", width=PLANE_WIDTH, height=PLANE_HEIGHT)

    def points(self) -> hv.Points:
        a, b = self.features
        points = galaxy_points(self.data, EMBEDDING, self.state.colour_by)  # colours, markers, hover of the scatter
        frame = points.data.assign(umap_1=self.latent[:, a], umap_2=self.latent[:, b])
        return points.clone(frame).redim(umap_1=f"feature_{a}", umap_2=f"feature_{b}").opts(
            xlabel=f"image-VAE feature {a}   ○ training  ☆ validation", ylabel=f"image-VAE feature {b}",
            title=f"Image-VAE latent plane, coloured by {label(self.state.colour_by)}", responsive=False,
            width=PLANE_WIDTH, height=PLANE_HEIGHT)

    @property
    def how(self) -> str:
        a, b = self.features
        return f"box/lasso on image-VAE features {a} and {b}"


class ImageFeatures:
    """Traversal strips, the features × properties heatmap and the latent plane."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        traversals = np.asarray(data.bundle.read(schema.IMAGE_VAE_TRAVERSALS), float)
        table = feature_table(data)
        low, high = np.percentile(traversals, [0.5, 99.5])
        strips_width = LABEL_WIDTH + 20 + traversals.shape[1] * (TILE + GAP)
        rows = [pn.pane.Markdown(f"Decoded images, left to right: one feature from its 2nd to its 98th percentile "
                                 f"over the training galaxies, the others at their median ({traversals.shape[1]} "
                                 "steps).", width=strips_width, styles={"font-size": "12px", "color": "#555"})]
        for j, images in enumerate(traversals):
            strongest = strongest_property(table, j)
            text = f"**feature {j}**" + (f"<br>r = {strongest[1]:+.2f} with {label(strongest[0])}" if strongest else "")
            rows.append(pn.Row(pn.pane.Markdown(text, width=LABEL_WIDTH, styles={"font-size": "12px"}, margin=(0, 5)),
                               pn.pane.PNG(traversal_strip(images, low, high), margin=(2, 5)),
                               css_classes=["traversal-row"]))
        self.traversals = pn.Column(*rows, width=strips_width + 20, css_classes=["traversals"])
        self.plane = LatentPlane(data, state)
        feature_rows = [f"feature {j}" for j in table["feature"]]
        self.correlations = CorrelationTable(
            data, state, lambda: correlation_heatmap(correlation_frame(table, feature_rows),
                                                     "Image-VAE features × galaxy properties (Pearson r)",
                                                     "Latent feature"),
            css_class="image-vae-correlations")
        a, b = self.plane.features
        plane_note = pn.pane.Markdown(f"Features {a} and {b}: the two that best separate the morphological types "
                                      "(largest share of their variance between the types' means). Box or lasso "
                                      "select galaxies here.", styles={"font-size": "12px", "color": "#555"})
        # Fixed widths (strips ~530 px, plane 560 px) keep both side by side in the page's ~1,170 px main column
        self.view = pn.Column(pn.Row(self.traversals, pn.Column(plane_note, self.plane.pane, width=PLANE_WIDTH + 20)),
                              self.correlations.view, sizing_mode="stretch_width")
