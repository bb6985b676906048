"""The anomaly parts against the mock survey's truth (issue 13 part 5), without a build.

The rotational asymmetry A (precompute.morphology) must see what the mock plants in a disturbed / merging
system — a lopsided disc, an offset companion nucleus and a tidal arc — and must not see it in the same galaxy
drawn without them, observed the same way.
"""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from precompute import schema
from precompute.bundle import Bundle
from precompute.embeddings import combine_tails, nuclear_residual, tail_significance
from precompute.images import rebin_flux
from precompute.mock.observe import INSTRUMENTS, observe
from precompute.mock.population import draw_galaxy
from precompute.mock.survey import galaxy_params, make_galaxy
from precompute.mock.synthesis import synthesize
from precompute.morphology import image_asymmetry, rotational_asymmetry
from precompute.ssp import load_templates

SEED, IMAGE_SIZE = 42, 64  # the demo survey; the bundle's image size (config.prepare.image_size)


def _streams(seed: int, index: int):
    """Galaxy ``index``'s three random streams (population, synthesis, observation), as the mock survey draws
    them (precompute.mock.survey)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3)]


def _undisturbed_twin_image(seed: int, index: int) -> np.ndarray:
    """Galaxy ``index`` drawn as the survey draws it, then synthesised and observed without its disturbance (no
    lopsidedness, companion or tidal arc; the same mass, structure, populations and observing streams)."""
    rng_population, rng_synthesis, rng_observation = _streams(seed, index)
    instrument = INSTRUMENTS["manga"]
    _, radius, re_target = instrument.draw_footprint(rng_population)
    params = draw_galaxy(rng_population, re_target)
    assert params.disturbed
    twin = dataclasses.replace(params, disturbed=False, asymmetry=0.0, companion_fraction=0.0, tidal_fraction=0.0,
                               companion_offset_arcsec=(0.0, 0.0), companion_dv_kms=0.0)
    model = synthesize(twin, rng_synthesis, load_templates())
    return rebin_flux(observe(model, instrument, radius, rng_observation).cutout, IMAGE_SIZE)


def _pick(seed: int, want, n: int) -> list[int]:
    return [i for i in range(400) if want(galaxy_params(seed, i)[1])][:n]


@pytest.fixture(scope="module")
def disturbed_and_twins():
    # the first three without a foreground star on the image (a star is compact asymmetry: the next test)
    indices, disturbed = [], []
    for i in _pick(SEED, lambda p: p.disturbed, 6):
        galaxy = make_galaxy(SEED, i)
        if "star" not in galaxy.observed.info and len(indices) < 3:
            indices.append(i)
            disturbed.append(rebin_flux(galaxy.image, IMAGE_SIZE))
    disturbed = np.stack(disturbed)
    twins = np.stack([_undisturbed_twin_image(SEED, i) for i in indices])
    return indices, image_asymmetry(disturbed)["asymmetry"], image_asymmetry(twins)["asymmetry"]


def test_disturbed_galaxies_are_more_asymmetric_than_their_undisturbed_twins(disturbed_and_twins):
    indices, a_disturbed, a_twin = disturbed_and_twins
    assert len(indices) == 3
    # each merger more asymmetric than the same galaxy without its disturbance, by a margin well above the noise
    assert (a_disturbed > a_twin + 0.05).all(), (indices, a_disturbed, a_twin)
    # and the twins are as symmetric as a smooth galaxy should be
    assert (np.abs(a_twin) < 0.05).all(), (indices, a_twin)


def test_quiet_galaxies_are_symmetric_and_a_star_on_them_is_compact_asymmetry():
    """Ellipticals and S0s without a disturbance (the survey's smoothest galaxies) have A near 0 — below every
    merger of the previous test's kind — even when a foreground star falls on one: the pipeline's A masks the
    brightest compact residual, and what that removed, the star, is the galaxy's compact asymmetry."""
    indices = _pick(SEED, lambda p: p.morphology in ("E", "S0") and not p.disturbed and not p.agn, 4)
    quiet = [make_galaxy(SEED, i) for i in indices]
    measured = image_asymmetry(np.stack([rebin_flux(g.image, IMAGE_SIZE) for g in quiet]))
    starred = np.array(["star" in g.observed.info for g in quiet])
    assert 1 <= starred.sum() <= 3
    assert (np.abs(measured["asymmetry"]) < 0.01).all(), (indices, measured)
    assert (measured["compact_asymmetry"][starred] > 0.02).all(), (indices, measured)
    assert (np.abs(measured["compact_asymmetry"][~starred]) < 0.005).all(), (indices, measured)


def test_asymmetry_of_synthetic_images():
    """A symmetric source has A ≈ 0 whatever the noise; a lopsided one has A close to its analytic value;
    the centre of rotation is found when the source is off the image centre by a pixel."""
    rng = np.random.default_rng(0)
    n = 64
    y, x = np.indices((n, n)) - (n - 1) / 2
    r = np.hypot(x, y)
    disc = 50.0 * np.exp(-r / 4.0)
    noise = rng.normal(0.0, 0.05, (n, n))
    assert abs(rotational_asymmetry(disc + noise)["asymmetry"]) < 0.01
    shifted = 50.0 * np.exp(-np.hypot(x - 1.0, y + 0.5) / 4.0)
    result = rotational_asymmetry(shifted + noise)
    assert abs(result["asymmetry"]) < 0.01 and result["centre"] == (32.5, 31.0)
    lopsided = disc * (1 + 0.3 * np.cos(np.arctan2(y, x)))  # m = 1 mode of amplitude 0.3
    # About the light centre a pure m = 1 mode of amplitude ε has A = 4ε/π; the centre search moves the
    # centre towards the heavy side and so absorbs most of it: A drops well below that, but stays clearly
    # above a symmetric disc's
    assert rotational_asymmetry(lopsided + noise, search=0)["asymmetry"] == pytest.approx(4 * 0.3 / np.pi, abs=0.02)
    assert 0.03 < rotational_asymmetry(lopsided + noise)["asymmetry"] < 4 * 0.3 / np.pi
    # a point source (a foreground star) far from the centre raises A; masking the brightest compact residual
    # removes it again
    star = np.zeros((n, n))
    star[37, 26] = 300.0  # 6 % of the disc's flux, 7.8 pixels from the centre, inside the aperture
    from scipy.ndimage import gaussian_filter

    starred = disc + gaussian_filter(star, 1.2) + noise
    assert rotational_asymmetry(starred)["asymmetry"] > 0.05
    masked = rotational_asymmetry(starred, mask_compact=1)
    assert abs(masked["asymmetry"]) < 0.01
    assert masked["compact_asymmetry"] == pytest.approx(rotational_asymmetry(starred)["asymmetry"], abs=0.01)
    with pytest.raises(ValueError, match="square 2-D image"):
        rotational_asymmetry(np.zeros((3, 64, 64)))


def test_tail_significance_and_fisher_combination():
    values = np.array([3.0, 1.0, 2.0, 2.0, np.nan])
    # the share of values at least as high: 1/5, 4/5, 3/5, 3/5 and (NaN = lowest) 5/5
    assert tail_significance(values) == pytest.approx(-np.log10([0.2, 0.8, 0.6, 0.6, 1.0]))
    rng = np.random.default_rng(1)
    quiet = {name: rng.normal(size=200) for name in ("a", "b", "c")}
    # one galaxy far out in part b only, another somewhat high (8th of 200) in all three: both rank among the
    # top 5 %; a quiet galaxy can reach their scores by chance (the tail probability of the most extreme value
    # is 1/N however far out it lies, and Fisher's sum adds the other parts' chance tails)
    quiet["b"][0] = 10.0
    for name in quiet:
        quiet[name][1] = np.sort(quiet[name])[-8]
    score, driver = combine_tails(quiet)
    rank = np.argsort(np.argsort(-score))
    assert driver[0] == "b" and rank[0] < 10 and rank[1] < 3


def test_nuclear_residual_is_the_mean_within_the_nucleus():
    spaxels = np.full((2, 8, 8), np.nan, np.float32)
    spaxels[0, 3:5, 3:5] = 2.0  # the four central spaxels (the centre of an 8 × 8 crop is 3.5, 3.5)
    spaxels[0, 0, 0] = 100.0  # far from the nucleus: ignored
    assert nuclear_residual(spaxels) == pytest.approx([2.0, 0.0])


def test_combined_score_with_few_neighbours_and_single_spectra():
    """A bundle keeping 5 neighbours (config projections.n_neighbours) still gets a fingerprint typicality (the 5th
    neighbour), and an object of one spectrum in a survey of cubes gets none: its one-hot fingerprint is far from
    every cube's whatever it is."""
    from types import SimpleNamespace

    from precompute.embeddings import _combine_anomaly

    rng = np.random.default_rng(0)
    galaxies = pd.DataFrame({"n_bins": [40, 35, 1, 50, 45, 30], "anomaly_convlstm": rng.random(6),
                             "anomaly_nucleus": rng.random(6), "asymmetry": rng.random(6)})
    knn = np.sort(rng.random((6, 5)), axis=1)
    writer = SimpleNamespace(metrics={})
    out = _combine_anomaly(writer, galaxies, knn, {"projections": {"n_neighbours": 5}})
    typical = out["fingerprint_typicality"].to_numpy()
    assert np.isnan(typical[2]) and np.allclose(np.delete(typical, 2), np.delete(knn[:, 4], 2))
    assert writer.metrics["anomaly"]["parts"] == ["anomaly_convlstm", "anomaly_nucleus", "asymmetry",
                                                  "fingerprint_typicality"]
    assert np.isfinite(out["anomaly_score"]).all()


def test_the_seed_000_figure_tables_correlate_the_combined_score(real_bundle):
    """Fig. 10 tables are written with the projections, before the score exists; the build rewrites them after."""
    bundle = Bundle(real_bundle)
    for name in bundle.read(schema.EMBEDDING_INDEX):
        table = bundle.read(schema.EMBEDDING_CORRELATION, embedding=name)
        assert {"anomaly_score", "asymmetry", "fingerprint_typicality"} <= set(table.columns), name
