"""Discovery (issue 13): the labels log, the ranked list of what to look at next, labelling from the dashboard
state (selections, SOM nodes, undo, select by label, export) and the anomaly explanation of the detail view.

Labels given through the shared `data` fixture are undone at the end of each test (the `labelling` fixture), so
other tests see the bundles unlabelled.
"""
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.io.votable import parse

from explorer import anomaly_explained, selection_table
from explorer.labelling import FocusLabels, LabelTools
from explorer.ranking import WhatNext
from precompute import schema
from precompute.bundle import Bundle, BundleError
from precompute.labels import (
    INTERESTING,
    NOT_INTERESTING,
    LabelError,
    LabelLog,
    labels_path,
)
from precompute.rank import (
    ANOMALY_PARTS_SPACE,
    anomaly_percentile,
    default_space,
    feature_space,
    rank,
    rank_bundle,
    relevance,
    relevance_spaces,
)

IDS = np.array([f"g{i}" for i in range(6)], dtype=object)


def labelling_script(path, galaxy_ids, body: str) -> str:
    """Python source of another process labelling the file `path`: `body` runs with its LabelLog as `log`."""
    return ("import sys, numpy as np\nfrom precompute.labels import LabelLog\n"
            f"log = LabelLog({str(path)!r}, np.array({list(galaxy_ids)!r}, dtype=object), 'another-process')\n"
            + body)


@pytest.fixture
def labelling(state):
    """The session's state; every label it gave is undone afterwards."""
    yield state
    while state.undo_label():
        pass


# -- the labels log ------------------------------------------------------------------------------------------------

def test_labels_are_replayed_from_the_log(tmp_path):
    path = tmp_path / "b.labels.jsonl"
    log = LabelLog(path, IDS, "bundle-1")
    log.add(INTERESTING, [0, 1], how="by hand")
    log.add(NOT_INTERESTING, [1])  # the later relevance label wins
    log.add("rings", [2, 3])
    log.add("rings", [4])
    log.remove("rings", [3])
    cancelled = log.add("bars", [5])
    log.undo(cancelled["event"])
    again = LabelLog(path, IDS, "bundle-1")
    for read in (log, again):
        assert sorted(read.labels) == [INTERESTING, NOT_INTERESTING, "rings"]
        assert np.flatnonzero(read.labels[INTERESTING]).tolist() == [0]
        assert np.flatnonzero(read.labels[NOT_INTERESTING]).tolist() == [1]
        assert np.flatnonzero(read.labels["rings"]).tolist() == [2, 4]
        assert np.array_equal(read.relevance(), [1, 0, np.nan, np.nan, np.nan, np.nan], equal_nan=True)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 7  # append-only: every act, the undo too
    first = lines[0]
    assert first["galaxies"] == ["g0", "g1"] and first["bundle_id"] == "bundle-1" and first["how"] == "by hand"
    assert first["author"] and first["time"].endswith("+00:00")
    assert lines[-1] == {**lines[-1], "action": "undo", "undoes": cancelled["event"]}


def test_author_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXY_EXPLORER_AUTHOR", "vera.rubin")
    event = LabelLog(tmp_path / "l.jsonl", IDS, "b").add("rings", [1])
    assert event["author"] == "vera.rubin"


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_label_starts_a_new_line(tmp_path):
    path = tmp_path / "b.labels.jsonl"
    LabelLog(path, IDS, "b").add("rings", [0])
    with open(path, "a") as out:
        out.write('{"event": "x", "action": "add", "label": "bars", "gal')  # killed mid-write
    with pytest.warns(UserWarning, match="line 2 skipped"):
        log = LabelLog(path, IDS, "b")
    log.add("bars", [1])
    with pytest.warns(UserWarning, match="line 2 skipped"):
        reread = LabelLog(path, IDS, "b")
    assert sorted(reread.labels) == ["bars", "rings"] and reread.labels["bars"][1]
    # a reader that met the cut line takes in the new line after it, however the cut line was ended
    with open(path, "a") as out:
        out.write('{"event": "y", "action": "add", "label": "spir')  # killed again
    with pytest.warns(UserWarning, match="line 4 skipped"):
        reread.refresh()
    with open(path, "a") as out:
        out.write('als"\n')  # ended by hand
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the end of a line already skipped is not warned about twice
        reread.refresh()
    with pytest.warns(UserWarning, match="line 4 skipped"):  # the writer meets the bad line for the first time
        log.add("discs", [2])
    reread.refresh()
    assert sorted(reread.labels) == ["bars", "discs", "rings"]


def test_labels_other_writers_append_are_replayed_in_the_file_s_order(tmp_path):
    """Two servers (or a server and a script) on one labels file: each takes in the other's events, in the order
    they stand in the file."""
    path = tmp_path / "b.labels.jsonl"
    first, second = LabelLog(path, IDS, "b"), LabelLog(path, IDS, "b")
    first.add(INTERESTING, [0])
    assert second.refresh() and second.labels[INTERESTING][0]
    assert not second.refresh()
    ring = second.add("rings", [1, 2])
    first.add(NOT_INTERESTING, [0])  # its append takes in the second's event first
    second.refresh()
    second.undo(ring["event"])
    assert first.refresh()
    reread = LabelLog(path, IDS, "b")
    for log in (first, second, reread):
        assert [e["event"] for e in log.events] == [e["event"] for e in reread.events]
        assert sorted(log.labels) == [NOT_INTERESTING]
    path.unlink()  # a file removed, then replaced, is read again from scratch
    assert first.refresh() and first.labels == {} and not first.refresh()
    path.write_text(json.dumps(ring) + "\n")
    assert first.refresh() and [e["event"] for e in first.events] == [ring["event"]]


def test_a_reader_never_sees_half_a_line_while_two_processes_label(tmp_path):
    """Two processes append 150 labels each while this one keeps taking them in: no line is ever read half-written
    (no warning) and this log ends with every event, in the file's order."""
    path = tmp_path / "b.labels.jsonl"
    script = labelling_script(path, IDS, "for i in range(150):\n    log.add(f'{sys.argv[1]}-{i}', [i % 6])\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, name], cwd=os.getcwd()) for name in ("a", "b")]
    reader = LabelLog(path, IDS, "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a line read half-written would be skipped with a warning
        try:
            while any(w.poll() is None for w in writers):
                reader.refresh()
        finally:
            for writer in writers:
                writer.wait(timeout=120)
        reader.refresh()
    assert [w.returncode for w in writers] == [0, 0]
    assert [e["event"] for e in reader.events] == [e["event"] for e in LabelLog(path, IDS, "b").events]
    assert len(reader.events) == 300 and len(reader.tags) == 300


def test_labels_of_galaxies_not_in_the_bundle_are_kept_but_label_nothing(tmp_path):
    path = tmp_path / "b.labels.jsonl"
    LabelLog(path, np.array(["g0", "other"], dtype=object), "old-build").add("rings", [0, 1])
    log = LabelLog(path, IDS, "new-build")
    assert log.unknown_ids == {"other"} and np.flatnonzero(log.labels["rings"]).tolist() == [0]


def test_bad_labels_are_refused_naming_the_file(tmp_path):
    log = LabelLog(tmp_path / "b.labels.jsonl", IDS, "b")
    with pytest.raises(LabelError, match="b.labels.jsonl: a label needs a name"):
        log.add("  ", [0])
    with pytest.raises(LabelError, match="no galaxies"):
        log.add("rings", [])
    with pytest.raises(LabelError, match="outside 0..5"):
        log.add("rings", [6])
    with pytest.raises(LabelError, match="no event"):
        log.undo("nope")


def test_acknowledged_labels_survive_a_killed_writer(tmp_path):
    """A process that acknowledges each label only after `append` returns, killed with SIGKILL while labelling:
    every acknowledged label is in the file."""
    path = tmp_path / "b.labels.jsonl"
    script = labelling_script(path, IDS, "for i in range(100000):\n    log.add(f'tag{i}', [i % 6])\n"
                                         "    print(i, flush=True)\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd())
    acknowledged = [int(writer.stdout.readline()) for _ in range(50)]
    writer.kill()
    writer.wait()
    tags = {e["label"] for e in map(json.loads, path.read_text().splitlines()) if e.get("action") == "add"}
    assert {f"tag{i}" for i in acknowledged} <= tags


# -- the ranked list -----------------------------------------------------------------------------------------------

def test_relevance_follows_the_labels_of_nearby_galaxies():
    vectors = np.array([[0.0], [0.1], [5.0], [5.1], [10.0]], dtype=np.float32)
    labels = np.array([1.0, np.nan, 0.0, np.nan, np.nan])
    r = relevance(vectors, "euclidean", 0.5, labels)
    assert r[1] > 0.75 and r[3] < 0.25 and r[4] == pytest.approx(0.5)
    assert np.array_equal(relevance(vectors, "euclidean", 0.5, np.full(5, np.nan)), np.full(5, 0.5))


def test_without_labels_the_list_is_the_anomaly_order_and_labels_reorder_it():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 4)).astype(np.float32)
    anomaly = rng.random(50)
    unlabelled = rank(vectors, "cosine", 0.3, np.full(50, np.nan), anomaly)
    assert unlabelled["g"].tolist() == np.argsort(-anomaly).tolist()
    assert np.allclose(unlabelled["anomaly_percentile"], anomaly_percentile(anomaly, 50)[unlabelled["g"]])
    labels = np.full(50, np.nan)
    labels[unlabelled["g"].iat[-1]] = 1.0  # the least anomalous galaxy is interesting
    ranked = rank(vectors, "cosine", 0.3, labels, anomaly)
    assert unlabelled["g"].iat[-1] not in ranked["g"].to_numpy()  # reviewed: out of the list
    twin = int(np.argmax(vectors @ vectors[unlabelled["g"].iat[-1]] / np.linalg.norm(vectors, axis=1)
                         * (np.isnan(labels))))
    before, after = (f.set_index("g").loc[twin] for f in (unlabelled, ranked))
    assert after["relevance"] > 0.7 and after["score"] > 1.4 * before["score"]  # its most similar galaxy rose
    assert ranked["g"].tolist() != [g for g in unlabelled["g"] if g in set(ranked["g"])]


def test_rank_cli_writes_the_dashboards_ranking(real_bundle, tmp_path):
    bundle = Bundle(real_bundle)
    labels = tmp_path / "labels.jsonl"
    log = LabelLog(labels, bundle.galaxies["galaxy_id"].to_numpy(), bundle.id)
    log.add(INTERESTING, [0, 3])
    log.add(NOT_INTERESTING, [5])
    out = tmp_path / "ranked.csv"
    result = subprocess.run([sys.executable, "-m", "precompute", "rank", "--bundle", str(real_bundle), "--labels",
                             str(labels), "--embedding", "anomaly", "--out", str(out)], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, comment="#")
    expected = rank_bundle(bundle, log, "anomaly")
    assert table["galaxy_id"].tolist() == expected["galaxy_id"].tolist()
    assert len(table) == bundle.galaxies.shape[0] - 3 and table["rank"].tolist() == list(range(1, len(table) + 1))
    assert np.allclose(table["score"], expected["score"], rtol=1e-5)
    assert np.all(np.diff(table["score"]) <= 1e-6)
    assert f"# bundle_id: {bundle.id}" in out.read_text()


def test_rank_cli_names_a_missing_labels_file(real_bundle, tmp_path):
    result = subprocess.run([sys.executable, "-m", "precompute", "rank", "--bundle", str(real_bundle), "--labels",
                             str(tmp_path / "none.jsonl")], check=False, capture_output=True, text=True)
    assert result.returncode == 1 and "none.jsonl: no labels file here" in result.stderr


# -- labelling in the dashboard ----------------------------------------------------------------------------------

def test_label_the_selection_select_it_back_and_undo(data, labelling):
    state = labelling
    state.select_galaxies([1, 2, 5], how="by hand")
    event = state.label("ring sample")
    assert event["how"] == "by hand" and event["bundle_id"] == data.bundle.id
    assert labels_path(data.path).exists()
    assert [data.galaxies["tags"].iat[g] for g in (1, 2, 5, 0)] == ["ring sample"] * 3 + [""]
    state.clear()
    state.select_label("ring sample")
    assert state.selected.tolist() == [1, 2, 5] and state.how == "label ring sample"
    state.undo_label()
    assert "ring sample" not in data.labels.labels and (data.galaxies["tags"] == "").all()
    with pytest.raises(KeyError, match="no galaxy carries the label"):
        state.select_label("ring sample")


def test_a_new_page_shows_the_labels_another_process_gave(data, labelling):
    """A second server process (`panel serve --num-procs`, another user's server) or a script labels galaxies: the
    next page this process opens shows them, and selects them back by the tag."""
    ids = data.galaxies["galaxy_id"].to_numpy()[[1, 3]].tolist()
    script = labelling_script(labels_path(data.path), ids, "print(log.add('from elsewhere', [0, 1])['event'])\n")
    event = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                           cwd=os.getcwd()).stdout.strip()
    try:
        assert "from elsewhere" not in data.labels.labels  # this process has not read the file since
        state = type(labelling)(data)  # a new page
        assert [data.galaxies["tags"].iat[g] for g in (1, 3, 0)] == ["from elsewhere"] * 2 + [""]
        state.select_label("from elsewhere")
        assert state.selected.tolist() == [1, 3]
    finally:
        LabelLog(labels_path(data.path), data.galaxies["galaxy_id"].to_numpy(), data.bundle.id).undo(event)
        data.refresh_labels()
    assert "from elsewhere" not in data.labels.labels and (data.galaxies["tags"] == "").all()


def test_tagging_a_desom2_node_tags_its_members_with_an_undo(data, labelling):
    state = labelling
    node = int(np.argmax(data.bundle.read(schema.DESOM2_HITS)))
    state.select_nodes2([node])
    members = np.flatnonzero(data.galaxy_node2 == node)
    state.label("node sample")
    assert np.flatnonzero(data.labels.labels["node sample"]).tolist() == members.tolist()
    assert data.labels.events[-1]["how"].startswith("DESOM-2 node")
    state.undo_label()
    assert "node sample" not in data.labels.labels


def test_tagging_a_desom1_node_tags_the_galaxies_of_its_spectra(data, labelling):
    state = labelling
    node = int(np.argmax(data.bundle.read(schema.DESOM1_HITS)))
    state.select_nodes([node])
    state.label("spectral type")
    expected = np.unique(data.bin_galaxy[data.bin_node == node])
    assert np.flatnonzero(data.labels.labels["spectral type"]).tolist() == expected.tolist()


def test_labels_colour_the_views_and_go_into_every_export(data, labelling):
    state = labelling
    state.label(INTERESTING, [0], how="detail view")
    state.label(NOT_INTERESTING, [1])
    state.label("sample B", [0, 1])
    assert data.colour_columns["relevance"] == "categorical" and data.colour_columns["tags"] == "categorical"
    state.colour_by = "relevance"
    assert data.node_statistic("relevance", "desom2") is not None
    assert set(data.categories("relevance")) == {INTERESTING, NOT_INTERESTING, "unlabelled"}
    state.select_galaxies([0, 1, 2], how="export")
    csv = pd.read_csv(io.BytesIO(selection_table.export_bytes(data, state, "csv")), comment="#")
    assert csv["relevance"].tolist() == [INTERESTING, NOT_INTERESTING, "unlabelled"]
    assert csv["tags"].fillna("").tolist() == ["sample B", "sample B", ""]
    with fits.open(io.BytesIO(selection_table.export_bytes(data, state, "fits"))) as hdus:
        assert [v.strip() for v in hdus[1].data["relevance"]] == [INTERESTING, NOT_INTERESTING, "unlabelled"]
    votable = parse(io.BytesIO(selection_table.export_bytes(data, state, "vot"))).get_first_table().to_table()
    assert list(votable["tags"])[:2] == ["sample B", "sample B"]


def test_label_views_follow_the_labels(data, labelling):
    state = labelling
    focus, tools = FocusLabels(data, state), LabelTools(data, state)
    state.focus = 2
    focus.mark(INTERESTING)
    assert focus.text.object.startswith("Your labels: **interesting**")
    state.select_galaxies([3, 4], how="by hand")
    tools.tag.value = "pair"
    tools.apply(tools.tag.value)
    assert "Labelled 2 galaxies **pair**" in tools.status.object
    assert tools.choose.options == [INTERESTING, "pair"] and "- pair: 2" in tools.summary.object
    tools.tag.value = " "
    tools.apply(tools.tag.value)
    assert "a label needs a name" in tools.status.object


def test_the_ranked_list_changes_after_labels(data, labelling):
    state = labelling
    view = WhatNext(data, state)
    shown = view.grid.galaxies
    assert len(shown) == min(12, data.n_galaxies)
    if "anomaly_score" in data.galaxies:  # before any label: the anomaly order
        assert shown == np.argsort(-data.galaxies["anomaly_score"].to_numpy(), kind="stable")[:12].tolist()
    state.label(NOT_INTERESTING, [shown[0]])
    after = view.grid.galaxies
    assert shown[0] not in after and after != shown
    assert "from 1 labelled" in view.header.object


# -- anomalies explained -------------------------------------------------------------------------------------------

def test_the_detail_view_ranks_the_line_residuals_and_shows_the_top_line_maps(real_bundle, state, data):
    if data.path != real_bundle:
        assert anomaly_explained.anomaly_explained(data, state) is None  # the synthetic bundle has no anomaly model
        return
    residuals = np.asarray(data.bundle.read(schema.ANOMALY_LINE_RESIDUALS), float)
    g = int(np.argmax(data.galaxies["anomaly_score"]))
    lines = anomaly_explained.ranked_lines(data, g)
    values = [value for _, value in lines]
    assert values == sorted(values, reverse=True) and len(values) == np.isfinite(residuals[g]).sum()
    assert values[0] == pytest.approx(np.nanmax(residuals[g]))
    top = np.asarray(data.bundle.read(schema.ANOMALY_TOP_LINES))
    assert np.array_equal(top[:, 0], np.nanargmax(residuals, axis=1))  # the build stored each galaxy's worst line
    maps = np.asarray(data.bundle.read(schema.ANOMALY_TOP_LINE_MAPS))
    crop = data.bundle.config["anomaly"]["crop"]
    assert maps.shape == (data.n_galaxies, top.shape[1], 3, crop, crop)
    view = anomaly_explained.AnomalyExplained(data, state)
    state.focus = g
    assert view.text.object.splitlines()[2].startswith(f"1. {lines[0][0]}: ")
    driver = schema.ANOMALY_PARTS[data.galaxies["anomaly_driver"].iat[g]]  # what drives the combined score
    assert f"driven most by {driver}" in view.text.object
    row = data.galaxies.iloc[g]
    assert (f"Image asymmetry {row['asymmetry']:.2f} with the brightest compact source masked; that source alone "
            f"adds {row['compact_asymmetry']:.2f}") in view.text.object
    titles = [panel.opts.get().kwargs["title"] for panel in view.maps.object]
    assert titles[:3] == [f"{lines[0][0]}: {kind}" for kind in anomaly_explained.MAP_TITLES]
    assert len(view.bars.object) == len(lines)


def test_the_relevance_is_learned_in_the_anomaly_parts_by_default(real_bundle, tmp_path):
    """Astronomaly's relevance model works on the features the anomalies were found in: here the percentile of
    each part of the anomaly score, of the compact asymmetry and of each line's emission-line error
    (bench_discovery: 89 rare galaxies in the first 100 viewed against 60 with labels in the contrastive embedding,
    on the 2,560-galaxy mock survey; the lines added 44 over nine 640-galaxy surveys)."""
    bundle = Bundle(real_bundle)
    parts = [part for part in schema.ANOMALY_PARTS if part in bundle.galaxies]
    assert parts and relevance_spaces(bundle)[0] == ANOMALY_PARTS_SPACE == default_space(bundle)
    vectors, metric, width = feature_space(bundle, ANOMALY_PARTS_SPACE)
    columns = parts + ["compact_asymmetry"]  # the star-or-tidal-light column is there too
    lines = np.asarray(bundle.read(schema.ANOMALY_LINE_RESIDUALS), float)
    assert vectors.shape == (len(bundle.galaxies), len(columns) + lines.shape[1])
    assert metric == "euclidean" and width > 0
    for j, column in enumerate(columns):  # each column ranks the galaxies by its measure, the strongest at 1
        assert vectors[int(np.nanargmax(bundle.galaxies[column])), j] == 1.0
    # each line ranks the galaxies by its error, scaled so the 19 lines weigh as much as the columns together
    line_scale = np.sqrt(len(columns) / lines.shape[1])
    for j in range(lines.shape[1]):
        assert vectors[int(np.nanargmax(lines[:, j])), len(columns) + j] == pytest.approx(line_scale)
    log = LabelLog(tmp_path / "labels.jsonl", bundle.galaxies["galaxy_id"].to_numpy(), bundle.id)
    labelled = int(np.nanargmax(bundle.galaxies["anomaly_score"]))
    log.add(INTERESTING, [labelled])
    ranked = rank_bundle(bundle, log, ANOMALY_PARTS_SPACE).set_index("g")
    nearest = np.argsort(np.linalg.norm(vectors - vectors[labelled], axis=1))[1]
    assert ranked.loc[nearest, "relevance"] > 0.5  # a galaxy with the same kind of anomaly is raised
    with pytest.raises(BundleError, match="no relevance space 'colour'"):
        rank_bundle(bundle, log, "colour")
