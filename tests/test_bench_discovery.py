"""benchmarks/bench_discovery.py: the simulated user's loop counts what it views, on hand-made rankings through the
real `precompute.rank.rank`; mock.rare_fraction_scale raises the rare kinds without changing the default survey, and
the mock's artefact fractions reach the build's preparation."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from precompute.bundle import Bundle
from precompute.config import ConfigError, load_config
from precompute.labels import INTERESTING, NOT_INTERESTING, LabelLog
from precompute.mock.survey import galaxy_params
from precompute.rank import rank

_spec = importlib.util.spec_from_file_location(
    "bench_discovery", Path(__file__).resolve().parent.parent / "benchmarks" / "bench_discovery.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _ranking(vectors, anomaly, bandwidth=0.1, metric="euclidean"):
    return lambda log: rank(vectors, metric, bandwidth, log.relevance(), anomaly)


def _log(tmp_path, n, name="user"):
    return LabelLog(tmp_path / f"{name}.labels.jsonl", [f"g{i}" for i in range(n)], "test")


def test_with_a_perfect_anomaly_score_every_rare_galaxy_comes_first(tmp_path):
    n, rng = 120, np.random.default_rng(0)
    rare = np.zeros(n, bool)
    rare[rng.choice(n, 15, replace=False)] = True
    anomaly = rng.uniform(0, 1, n) + 10 * rare  # the oracle: every rare galaxy above every other
    vectors = rng.normal(size=(n, 4))
    for active in (False, True):
        order, seconds = bench.simulate(_ranking(vectors, anomaly), _log(tmp_path, n, str(active)), rare,
                                        viewed=40, per_round=10, active=active)
        assert len(order) == 40 and len(set(order.tolist())) == 40
        assert rare[order[:15]].all() and not rare[order[15:]].any()
        assert bench.found(order, {"rare": rare}, cuts=(10, 15, 40)) == {
            10: {"rare": 10, "interesting": 10}, 15: {"rare": 15, "interesting": 15},
            40: {"rare": 15, "interesting": 15}}
        assert len(seconds) == (4 if active else 1)  # a ranking at the start and after each of the first 3 rounds


def test_the_baseline_reads_the_anomaly_order_and_labels_what_it_viewed(tmp_path):
    n, rng = 50, np.random.default_rng(1)
    anomaly = rng.permutation(n).astype(float)
    rare = rng.uniform(size=n) < 0.3
    log = _log(tmp_path, n)
    order, _ = bench.simulate(_ranking(rng.normal(size=(n, 3)), anomaly), log, rare, viewed=25, per_round=10,
                              active=False)
    assert order.tolist() == np.argsort(-anomaly)[:25].tolist()  # 10 + 10 + 5: the last round is cut to 25
    relevance = log.relevance()  # every viewed galaxy labelled from its flag, nothing else
    assert np.isfinite(relevance).sum() == 25
    assert (relevance[order] == rare[order]).all()
    labels = {e["label"] for e in log.events}
    assert labels <= {INTERESTING, NOT_INTERESTING}


def test_active_learning_finds_the_neighbours_of_a_labelled_rare_galaxy(tmp_path):
    # 20 rare galaxies in one tight clump of the embedding; the other 180 spread out. By anomaly score: one rare
    # galaxy first, then 40 common ones, then the other 19 rare ones (percentiles 0.80–0.90), then the rest.
    n, rng = 200, np.random.default_rng(2)
    rare = np.zeros(n, bool)
    rare[:20] = True
    vectors = rng.normal(0, 5, size=(n, 3))
    vectors[:20] = rng.normal(0, 0.02, size=(20, 3))
    anomaly = rng.uniform(0, 1, n)
    anomaly[1:20] += 1
    anomaly[20:60] += 2
    anomaly[0] = 4
    by_score, _ = bench.simulate(_ranking(vectors, anomaly), _log(tmp_path, n, "score"), rare, viewed=30,
                                 active=False)
    by_active, _ = bench.simulate(_ranking(vectors, anomaly), _log(tmp_path, n, "active"), rare, viewed=30,
                                  active=True)
    assert rare[by_score].sum() == 1  # the 29 after the first are common
    # one interesting label (relevance ~0.8 over the clump, score ~1.6 q) lifts the whole clump above the common
    # galaxies (relevance ~½, score ~q < 1) in round 2
    assert rare[by_active].sum() == 20 and rare[by_active[10:29]].all()


def test_the_loop_stops_when_every_galaxy_is_viewed(tmp_path):
    n = 7
    order, _ = bench.simulate(_ranking(np.eye(n), np.arange(n, dtype=float)), _log(tmp_path, n), np.ones(n, bool),
                              viewed=100, per_round=3)
    assert sorted(order.tolist()) == list(range(n))


def test_found_counts_each_kind_and_a_galaxy_of_two_kinds_once():
    flags = {"agn": np.array([1, 1, 0, 0, 0], bool), "disturbed": np.array([1, 0, 0, 1, 0], bool)}
    assert bench.found(np.array([0, 4, 3, 1]), flags, cuts=(2, 4)) == {
        2: {"agn": 1, "disturbed": 1, "interesting": 1}, 4: {"agn": 2, "disturbed": 2, "interesting": 3}}
    # a user after AGN only: the disturbed galaxies 3 and 0 are seen and counted per kind, not as found
    assert bench.found(np.array([0, 4, 3, 1]), flags, cuts=(4,), interesting=["agn"]) == {
        4: {"agn": 2, "disturbed": 2, "interesting": 2}}
    assert bench.expected_random(10, 200, 50) == 2.5 and bench.expected_random(10, 40, 100) == 10


def test_rare_fraction_scale_is_checked_and_its_default_keeps_the_demo_survey():
    assert load_config()["mock"]["rare_fraction_scale"] == 1.0
    assert load_config(mock={"rare_fraction_scale": 3})["mock"]["rare_fraction_scale"] == 3
    for bad, message in ((-1.0, "expected a number >= 0"), ("2", "expected a number"), (True, "expected a number")):
        with pytest.raises(ConfigError, match=f"mock.rare_fraction_scale: {message}"):
            load_config(mock={"rare_fraction_scale": bad})

    def counts(scale, n=160):
        params = [galaxy_params(42, i, "manga", scale)[1] for i in range(n)]
        return [sum(getattr(p, kind) for p in params) for kind in ("agn", "disturbed", "extreme_emission")]

    assert counts(1.0) == [5, 3, 1]  # the demo bundle's (seed 42, 160 galaxies) truth flags
    assert galaxy_params(42, 17) == galaxy_params(42, 17, "manga", 1.0)
    assert all(more > fewer for more, fewer in zip(counts(3.0), counts(1.0)))
    assert galaxy_params(42, 5, "manga", 3.0)[0] == galaxy_params(42, 5)[0]  # same galaxy ids


def test_artefact_fractions_are_checked_and_reach_the_prepared_galaxy():
    from precompute.prepare import prepare_input
    from precompute.shards import Unit

    keys = [key for key, _ in bench.ARTEFACTS.values()]
    for key in keys:
        assert load_config()["mock"][key] == 0.0
        for bad, message in ((1.5, "expected a number between 0 and 1"), ("0.1", "expected a number")):
            with pytest.raises(ConfigError, match=f"mock.{key}: {message}"):
                load_config(mock={key: bad})
    prepared, skipped = prepare_input(Unit("mock-0000003", index=3), load_config(mock=dict.fromkeys(keys, 1.0)))
    assert not skipped and all(prepared[0].row[column] for column in bench.ARTEFACTS)
    assert (bench.survey_path(Path("c"), 1, 640, 1.0, {"satellite_trail_fraction": 0.1}).name
            == "discovery-seed1-n640-rare1-trails0.1")
    assert (bench.survey_path(Path("c"), 1, 640, 1.0, dict(zip(keys, (0.1, 0.2)))).name
            == "discovery-seed1-n640-rare1-trails0.1-stars0.2")
    # surveys without artefacts keep the cache names of earlier runs
    assert bench.survey_path(Path("c"), 1, 640, 1.0, dict.fromkeys(keys, 0.0)).name == "discovery-seed1-n640-rare1"


def test_the_results_count_the_satellite_trails_each_order_showed(real_bundle, tmp_path, capsys):
    import shutil

    import pandas as pd

    copy = Path(shutil.copytree(real_bundle, tmp_path / "trails"))
    galaxies = pd.read_parquet(copy / "galaxies.parquet")
    assert not galaxies["satellite_trail"].any()  # the tiny build's survey has none (the default)
    # a trail on the most anomalous galaxy: the first either user views
    galaxies["satellite_trail"] = np.arange(len(galaxies)) == int(galaxies["anomaly_score"].to_numpy().argmax())
    galaxies.to_parquet(copy / "galaxies.parquet", index=False)
    result = bench.run(Bundle(copy), "anomaly parts", viewed=10, per_round=5)
    assert result["artefacts"]["satellite_trail"] == {"fraction": 0.0, "in_survey": 1, "viewed_score_10": 1,
                                                      "viewed_active_10": 1, "score_auc": 1.0}
    assert result["artefacts"]["unflagged_star"]["in_survey"] == 0
    bench.report(result)
    assert ("satellite trails (mock.satellite_trail_fraction 0): 1 in the survey, ROC AUC of the anomaly score "
            "1.000; shown in the first 10: score 1, active 1") in capsys.readouterr().out


def test_a_user_after_one_kind_teaches_the_ranking_to_pass_over_the_other_anomalies(tmp_path):
    # Two clumps of anomalies in the relevance space, both above every common galaxy by anomaly score: 30 of the
    # kind the user wants (clump A, scores just below clump B's) and 30 of another kind (clump B, scored highest).
    n, rng = 300, np.random.default_rng(3)
    wanted, other = np.zeros(n, bool), np.zeros(n, bool)
    wanted[:30], other[30:60] = True, True
    vectors = rng.normal(0, 5, size=(n, 3))
    vectors[:30] = rng.normal(3, 0.05, size=(30, 3))
    vectors[30:60] = rng.normal(-3, 0.05, size=(30, 3))
    anomaly = rng.uniform(0, 1, n) + 2 * wanted + 3 * other
    anomaly[0] = 10  # one wanted galaxy at the very top
    by_score, _ = bench.simulate(_ranking(vectors, anomaly), _log(tmp_path, n, "score"), wanted, viewed=30,
                                 active=False)
    by_active, _ = bench.simulate(_ranking(vectors, anomaly), _log(tmp_path, n, "active"), wanted, viewed=30,
                                  active=True)
    assert wanted[by_score].sum() == 1  # the other 29 of the first 30 are the other kind
    assert wanted[by_active].sum() >= 20  # labels 'not interesting' on clump B bring clump A up
