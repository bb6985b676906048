"""One selection state per browser session; every view is a function of (data, state).

A selection is always a set of galaxies (indices `g`); when it was made on spectra (SOM nodes, the spectra
scatter) it also keeps those spectra (indices `s`), so the SOM hit map shows exactly what was picked.
"Nothing selected" means the whole survey.
"""
from __future__ import annotations

import numpy as np
import panel as pn
import param

from explorer.data import LABEL_COLUMNS, ExplorerData, cluster_column, label


def index_set(indices, n: int, what: str) -> np.ndarray:
    """Sorted distinct indices in 0..n-1 (a mask, not np.unique: linear time for a million spectra)."""
    indices = np.asarray(indices, dtype=np.int64).ravel()
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise IndexError(f"{what} index out of range 0..{n - 1}: {indices.min()}..{indices.max()}")
    mask = np.zeros(n, bool)
    mask[indices] = True
    return np.flatnonzero(mask)


class SelectionState(param.Parameterized):
    galaxies = param.Array(default=None, allow_None=True, doc="indices g of the selected galaxies; None = all")
    spectra = param.Array(default=None, allow_None=True,
                          doc="indices s of the selected binned spectra; None = all spectra of the galaxies")
    nodes = param.List(default=[], item_type=int, doc="selected DESOM-1 nodes")
    nodes2 = param.List(default=[], item_type=int, doc="selected DESOM-2 nodes")
    how = param.String(default="whole survey", doc="how the selection was made, recorded in exports")
    colour_by = param.String(default="", doc="galaxy column that colours the scatter and the SOM median map")
    embedding = param.String(default="", doc="embedding shown in the galaxy scatter")
    clustering = param.String(default="", doc="clusters of the embedding shown by the cluster views and the "
                                              "cluster colour-by: a column of embeddings/<E>/clusters.parquet")
    focus = param.Integer(default=None, allow_None=True, doc="galaxy g shown in the detail view")
    pinned = param.Array(default=None, allow_None=True, doc="population A of the comparison")
    pinned_how = param.String(default="")
    labels_changed = param.Event(doc="a label was given or undone (by this session): views of labels follow it")
    placed = param.DataFrame(default=None, allow_None=True,
                             doc="spectra this session placed on the frozen maps (explorer.place_spectra): one row "
                                 "per spectrum, assign's columns (`node`, a cube's `desom2_node`); not in the bundle")

    def __init__(self, data: ExplorerData, **params):
        params.setdefault("colour_by", data.default_colour())
        params.setdefault("embedding", next(iter(data.embeddings), ""))
        params.setdefault("clustering", next(iter(data.clusterings(params["embedding"])), ""))
        super().__init__(**params)
        self.data = data
        self._derived: dict = {}  # arrays derived from the current selection, shared by the views
        self.label_events: list[dict] = []  # this session's label events, newest last: what Undo cancels
        data.refresh_labels()  # a new page shows every label in the file, whichever process gave it

    # -- what is selected --------------------------------------------------------------------------------------
    @property
    def selected(self) -> np.ndarray:
        """Indices g of the selected galaxies (all galaxies when nothing is selected)."""
        return np.arange(self.data.n_galaxies) if self.galaxies is None else self.galaxies

    @property
    def selected_spectra(self) -> np.ndarray:
        """Indices s of the selected binned spectra; computed once per selection, however many views ask."""
        key = (id(self.galaxies), id(self.spectra))
        if self._derived.get("key") != key:
            if self.spectra is not None:
                spectra = self.spectra
            elif self.galaxies is None:
                spectra = np.arange(self.data.n_bins)
            else:
                spectra = self.data.spectra_of(self.galaxies)
            self._derived = {"key": key, "spectra": spectra}
        return self._derived["spectra"]

    @property
    def node_hits(self) -> np.ndarray:
        """Selected binned spectra per DESOM-1 node."""
        spectra = self.selected_spectra
        if "hits" not in self._derived:
            self._derived["hits"] = self.data.node_hits(spectra)
        return self._derived["hits"]

    @property
    def selected_ids(self) -> list[str]:
        return self.data.galaxies["galaxy_id"].to_numpy()[self.selected].tolist()

    # -- ways to select (each one batched: views update once) -----------------------------------------------------
    def select_galaxies(self, galaxies, how: str) -> None:
        galaxies = index_set(galaxies, self.data.n_galaxies, "galaxy")
        self._set(galaxies=galaxies, spectra=None, nodes=[], nodes2=[], how=how)

    def select_ids(self, ids, how: str) -> None:
        missing = [i for i in ids if i not in self.data.index_of.index]
        if missing:
            raise KeyError(f"galaxy ids not in bundle {self.data.path}: {missing[:5]}")
        self.select_galaxies(self.data.index_of[list(ids)].to_numpy(), how)

    def select_spectra(self, spectra, how: str) -> None:
        spectra = index_set(spectra, self.data.n_bins, "spectrum")
        self._set(galaxies=self.data.galaxies_of(spectra), spectra=spectra, nodes=[], nodes2=[], how=how)

    def select_nodes(self, nodes) -> None:
        """DESOM-1 nodes: their binned spectra, and the galaxies those belong to."""
        nodes = sorted({int(k) for k in nodes})
        spectra = self.data.spectra_in_nodes(nodes)
        how = "DESOM-1 node" + ("s " if len(nodes) > 1 else " ") + ", ".join(self._node_names(nodes, self.data.desom1))
        self._set(galaxies=self.data.galaxies_of(spectra), spectra=spectra, nodes=nodes, nodes2=[], how=how)

    def select_nodes2(self, nodes) -> None:
        """DESOM-2 nodes: the galaxies whose fingerprints map there."""
        nodes = sorted({int(k) for k in nodes})
        how = f"{self.data.desom2['title']} node" + ("s " if len(nodes) > 1 else " ") + ", ".join(self._node_names(nodes, self.data.desom2))
        self._set(galaxies=self.data.galaxies_in_nodes2(nodes), spectra=None, nodes=[], nodes2=nodes, how=how)

    @property
    def cluster_column(self) -> str:
        """The galaxy column of the chosen clustering of the active embedding ("" when it has none)."""
        if self.clustering not in self.data.clusterings(self.embedding):
            return ""
        return cluster_column(self.embedding, self.clustering)

    def colour_by_clusters(self) -> None:
        if self.cluster_column:
            self.colour_by = self.cluster_column

    def select_cluster(self, cluster: str) -> None:
        """The galaxies of one cluster (a label of the chosen clustering, as a string)."""
        column = self.cluster_column
        members = np.flatnonzero(self.data.galaxies[column].to_numpy() == cluster)
        self.select_galaxies(members, how=f"cluster {cluster} of {label(column)}")

    @param.depends("embedding", "clustering", watch=True)
    def _clusters_follow(self) -> None:
        """While colouring by clusters, the colour follows the chosen embedding and clustering."""
        if self.data.is_cluster_column(self.colour_by):
            self.colour_by_clusters()

    # -- labels (precompute.labels: the log beside the bundle, shared by every session) --------------------------
    def label(self, label: str, galaxies=None, how: str | None = None, action: str = "add") -> dict:
        """Give (or, with action="remove", take away) a label: to `galaxies` (indices g), by default the selection
        as it was made (a tapped SOM node labels its members: the selection's `how` names the node)."""
        galaxies = self.selected if galaxies is None else galaxies
        event = self.data.record_label(action, label, galaxies, self.how if how is None else how)
        self.label_events.append(event)
        self._labels_shown()
        return event

    def undo_label(self) -> dict | None:
        """Cancel this session's latest label event not yet undone; None when there is nothing to undo."""
        if not self.label_events:
            return None
        event = self.data.undo_label(self.label_events.pop()["event"])
        self._labels_shown()
        return event

    def select_label(self, label: str) -> None:
        """The galaxies that carry a label now (a relevance label or a tag)."""
        self.data.refresh_labels()
        mask = self.data.labels.labels.get(label)
        if mask is None:
            raise KeyError(f"no galaxy carries the label {label!r} in {self.data.labels.path}")
        self.select_galaxies(np.flatnonzero(mask), how=f"label {label}")

    def _labels_shown(self) -> None:
        with pn.io.hold(freeze=True):
            self.param.trigger("labels_changed")
            if self.colour_by in LABEL_COLUMNS:  # recolour by the new labels
                self.param.trigger("colour_by")

    def clear(self) -> None:
        self._set(galaxies=None, spectra=None, nodes=[], nodes2=[], how="whole survey")

    def pin(self) -> None:
        """Keep the current selection as population A of the comparison."""
        self.param.update(pinned=self.selected.copy(), pinned_how=self.how)

    def _set(self, **values) -> None:
        galaxies = values["galaxies"]
        if self.focus is None or (galaxies is not None and len(galaxies) and self.focus not in galaxies):
            values["focus"] = int(galaxies[0]) if galaxies is not None and len(galaxies) else self.focus
        with pn.io.hold(freeze=True):  # one batch to the browser, and one model-graph recompute, not one per view
            self.param.update(**values)

    @staticmethod
    def _node_names(nodes, grid) -> list[str]:
        return [f"({k // grid['cols']}, {k % grid['cols']})" for k in nodes]
