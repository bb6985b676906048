"""Labels in the dashboard: mark the galaxy in the detail view or the whole selection as interesting / not
interesting, tag it with a sample name (a tapped SOM node tags its member galaxies), undo, and select the galaxies
that carry a label. The labels live in the append-only file beside the bundle (precompute.labels), shared by
every session of the server; `relevance` and `tags` are galaxy columns (colour by, export).
"""
from __future__ import annotations

import panel as pn

from explorer.data import ExplorerData
from explorer.state import SelectionState
from precompute.labels import INTERESTING, NOT_INTERESTING, RELEVANCE, LabelError


def galaxy_labels_text(data: ExplorerData, g: int) -> str:
    """"Your labels: **interesting** · tags: sample A; sample B" for galaxy g."""
    relevance, tags = data.galaxies["relevance"].iat[g], data.galaxies["tags"].iat[g]
    parts = [f"**{relevance}**"] + ([f"tags: **{tags}**"] if tags else [])
    return "Your labels: " + " · ".join(parts)


def labels_summary(data: ExplorerData) -> str:
    """One line per label in use, with its galaxy count, and where the labels are kept."""
    labels = data.labels.labels
    lines = [f"- {label}: {int(labels[label].sum()):,}" for label in (*RELEVANCE, *data.labels.tags) if label in labels]
    where = f"kept in `{data.labels.path.name}` beside the bundle"
    return ("**Labels** " + where + "\n\n" + "\n".join(lines)) if lines else f"**No labels yet** ({where})"


class FocusLabels:
    """Interesting / not interesting for the galaxy of the detail view, and its labels now."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.text = pn.pane.Markdown("", css_classes=["focus-labels"], margin=(0, 8))
        buttons = []
        for label, name, colour in ((INTERESTING, "★ Interesting", "success"),
                                    (NOT_INTERESTING, "✗ Not interesting", "default")):
            button = pn.widgets.Button(label=name, color=colour, width=150)
            button.on_click(lambda _, label=label: self.mark(label))
            buttons.append(button)
        self.view = pn.Row(*buttons, self.text, sizing_mode="stretch_width")
        state.param.watch(self.render, ["focus", "labels_changed"])
        self.render()

    @property
    def galaxy(self) -> int:
        return self.state.focus if self.state.focus is not None else 0

    def mark(self, label: str) -> None:
        gid = self.data.galaxies["galaxy_id"].iat[self.galaxy]
        self.state.label(label, [self.galaxy], how=f"detail view of {gid}")

    def render(self, *_) -> None:
        self.text.object = galaxy_labels_text(self.data, self.galaxy)


class LabelTools:
    """Label the selection (or the tapped SOM node's members), undo, and select by label."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.interesting = pn.widgets.Button(label="Selection: interesting", color="success", variant="outline")
        self.not_interesting = pn.widgets.Button(label="Selection: not interesting", color="default",
                                                  variant="outline")
        self.interesting.on_click(lambda _: self.apply(INTERESTING))
        self.not_interesting.on_click(lambda _: self.apply(NOT_INTERESTING))
        self.tag = pn.widgets.TextInput(label="Tag (a sample name)", placeholder="e.g. ring galaxies", width=200)
        self.tag_button = pn.widgets.Button(label="Tag selection", color="primary", width=140, align="end")
        self.tag_button.on_click(lambda _: self.apply(self.tag.value))
        self.undo = pn.widgets.Button(label="Undo my last label", color="warning", variant="outline")
        self.undo.on_click(self._undo)
        self.choose = pn.widgets.Select(label="Labels in use", options=[], width=200)
        self.select = pn.widgets.Button(label="Select galaxies with it", width=180, align="end")
        self.select.on_click(lambda _: self.choose.value and state.select_label(self.choose.value))
        self.status = pn.pane.Markdown("", css_classes=["label-status"], styles={"font-size": "12px"})
        self.summary = pn.pane.Markdown("", css_classes=["labels-summary"], styles={"font-size": "12px"})
        self.view = pn.Column(
            pn.pane.Markdown("Label the selection — a tapped SOM node labels its member galaxies:", margin=(0, 8)),
            pn.Row(self.interesting, self.not_interesting),
            pn.Row(self.tag, self.tag_button), self.undo,
            pn.Row(self.choose, self.select), self.status, self.summary, width=420)
        state.param.watch(self.render, ["labels_changed"])
        self.render()

    def apply(self, label: str) -> None:
        n = len(self.state.selected)
        try:
            event = self.state.label(label)
        except LabelError as err:
            self.status.object = f"⚠ {err}"
            return
        self.status.object = f"Labelled {n:,} galaxies **{event['label']}** ({event['how']})."

    def _undo(self, _) -> None:
        event = self.state.undo_label()
        self.status.object = "Undone." if event else "Nothing of yours to undo in this session."

    def render(self, *_) -> None:
        labels = [label for label in (*RELEVANCE, *self.data.labels.tags) if label in self.data.labels.labels]
        self.choose.options = labels
        if labels and self.choose.value not in labels:
            self.choose.value = labels[0]
        self.summary.object = labels_summary(self.data)

