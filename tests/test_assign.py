"""`python -m precompute assign`: new inputs placed on a bundle's frozen maps (uses the spectral-map test bundle)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tiny_builds import SURVEY_SEED

from precompute import assign, schema
from precompute.fingerprints import fingerprint_string
from precompute.formats import write_spectra_set
from precompute.mock.survey import write_mock_survey

N_FILES = 2


@pytest.fixture(scope="module")
def survey_files(tmp_path_factory):
    """The first galaxies of the bundle's own mock survey, written as MaNGA cubes with their drpall catalogue."""
    return write_mock_survey(tmp_path_factory.mktemp("mock_files"), N_FILES, SURVEY_SEED, "manga", progress=False)


def test_assign_reproduces_the_bundles_maps_for_its_own_files(survey_bundle, survey_files, tmp_path):
    out = tmp_path / "placed.csv"
    argv = [*map(str, survey_files["cubes"]), "--bundle", str(survey_bundle.path), "--out", str(out),
            "--catalogue", str(survey_files["catalogue"])]
    assert assign.main(argv) == 0
    placed = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert (placed["error"].isna()).all()
    bins, galaxies = survey_bundle.bins, survey_bundle.galaxies
    for index, (galaxy_id, rows) in enumerate(placed.groupby("galaxy_id", sort=False)):
        own = bins[bins["galaxy_id"] == galaxy_id].set_index("bin_id")
        assert len(rows) == len(own) > 0
        np.testing.assert_array_equal(rows["node"].to_numpy(), own.loc[rows["spectrum"], "desom1_node"].to_numpy())
        np.testing.assert_allclose(rows["qe"], own.loc[rows["spectrum"], "desom1_qe"], rtol=1e-4)
        cols = survey_bundle.read(schema.DESOM1_GRID)["cols"]
        np.testing.assert_array_equal(rows["bmu_row"] * cols + rows["bmu_col"], rows["node"])
        assert rows["recon_error"].between(0, 0.2).all()
        g = int(np.flatnonzero(galaxies["galaxy_id"] == galaxy_id)[0])
        assert (rows["desom2_node"] == galaxies["desom2_node"].iloc[g]).all()
        # The fingerprint string lists the bundle's fingerprint of that galaxy.
        fingerprint = survey_bundle.read(schema.FINGERPRINTS)[g].ravel()
        pairs = dict(item.split(":") for item in rows["fingerprint"].iloc[0].split())
        assert {int(k) for k in pairs} == set(np.flatnonzero(np.round(fingerprint, 2)))
        # Member medians of each node's properties come along.
        table = survey_bundle.read(schema.DESOM1_NODE_PROPERTIES)
        ages = table[table["property"] == "log_age_lw"].set_index("node")["median"]
        np.testing.assert_allclose(rows["median_log_age_lw"], ages.loc[rows["node"]].to_numpy())


def test_inputs_the_bundle_cannot_represent_get_an_error_row(survey_bundle, tmp_path):
    wave = np.asarray(survey_bundle.wave)
    spectrum = np.asarray(survey_bundle.read(schema.FLUX))[0]
    ivar = np.asarray(survey_bundle.read(schema.IVAR))[0]
    # Rest-frame (z = 0) spectra on a slightly wider grid: one like a bundle spectrum, one fully masked.
    wide = np.concatenate([[wave[0] * 0.99], wave, [wave[-1] * 1.01]])
    flux = np.vstack([np.r_[spectrum[0], spectrum, spectrum[-1]]] * 2)
    weights = np.vstack([np.r_[ivar[0], ivar, ivar[-1]]] * 2)
    mask = np.zeros(flux.shape, np.int32)
    mask[1] = 1
    mixed = tmp_path / "mixed.fits"
    write_spectra_set(mixed, wave=wide, flux=flux, ivar=weights, mask=mask, z=[0.0, 0.0])
    short = tmp_path / "short.fits"
    red = wide > 5000
    write_spectra_set(short, wave=wide[red], flux=flux[:1, red], ivar=weights[:1, red], mask=mask[:1, red], z=[0.0])
    missing = tmp_path / "missing.fits"

    placed = assign.assign_files(survey_bundle.path, [mixed, short, missing])
    assert list(placed["source"]) == [str(mixed), str(mixed), str(short), str(missing)]
    good, masked, too_short, absent = (placed.iloc[i] for i in range(4))
    assert good["error"] == "" and good["spectrum"] == 0
    # Re-preparing masks the sky-line pixels again (at z = 0 they fall on the spectrum): same or adjacent node.
    cols = survey_bundle.read(schema.DESOM1_GRID)["cols"]
    own = survey_bundle.bins["desom1_node"].iloc[0]
    assert abs(good["node"] // cols - own // cols) + abs(good["node"] % cols - own % cols) <= 1
    assert masked["spectrum"] == 1 and "masked" in masked["error"]
    assert "Å" in too_short["error"] or "cover" in too_short["error"]
    assert absent["error"] != ""
    assert placed.columns[:len(assign.COLUMNS)].tolist() == assign.COLUMNS


def test_placed_cubes_land_on_the_fingerprint_umap_where_the_build_drew_them(real_bundle, tmp_path):
    """The build draws its held-out galaxies on each UMAP through the fitted transform; placed anew from their cube
    files, the same galaxies get the fingerprint the bundle holds and, through the projector the bundle stores,
    the position that projector gives it. UMAP's transform optimises new points together (its negative samples
    share one random stream), so a galaxy placed alone may land off the spot the build's batch gave it: most do."""
    bundle = assign.Bundle(real_bundle)
    galaxies = bundle.galaxies
    held_out = np.flatnonzero(galaxies["split"].to_numpy() == "val")
    mock_index = galaxies["source"].str.rsplit(":", n=1).str[1].astype(int).to_numpy()
    files = write_mock_survey(tmp_path, int(mock_index[held_out].max()) + 1, bundle.config["seed"], "manga",
                              progress=False)
    cubes = [files["cubes"][mock_index[g]] for g in held_out]
    placed = assign.assign_files(real_bundle, cubes, catalogue=files["catalogue"])
    assert (placed["error"] == "").all()
    x_column, y_column = schema.umap_columns(schema.FINGERPRINT_EMBEDDING)
    stored = np.asarray(bundle.read(schema.EMBEDDING_UMAP, embedding=schema.FINGERPRINT_EMBEDDING))
    fingerprints = np.asarray(bundle.read(schema.FINGERPRINTS))
    maps = assign.frozen_maps(str(real_bundle), "cpu")
    spread = np.linalg.norm(stored - stored.mean(axis=0), axis=1).mean()
    near = 0
    for g in held_out:
        rows = placed[placed["galaxy_id"] == galaxies["galaxy_id"].iat[g]]
        assert len(rows) and rows[x_column].nunique() == 1  # one position per galaxy, on each of its rows
        assert rows["fingerprint"].iat[0] == fingerprint_string(fingerprints[g])
        xy = rows[[x_column, y_column]].to_numpy(float)[0]
        alone = maps.umap_position(schema.FINGERPRINT_EMBEDDING, fingerprints[g][None])[0]
        assert np.allclose(xy, alone, atol=1e-5), (g, xy, alone)
        distances = np.linalg.norm(stored - xy, axis=1)
        near += np.argmin(distances) == g and distances[g] < 0.3 * spread
    assert near >= 2 * len(held_out) / 3, (near, len(held_out))
