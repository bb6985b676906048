"""Readers never abort a batch (issue 12, item 4): a catalogue cell that is not a number, a file the process may
not read, negative IVAR in part of a cube, and a cube cut cleanly before its WAVE extension each give one line
naming the file (and row or column), or a counted masking, and the other files of the batch still get through.
Survey files come from the mock survey's own writer; the bad ones are made from them."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import precompute.formats as F
from precompute import prepare
from precompute.bundle import Bundle
from precompute.formats import fitsfile
from precompute.mock.survey import write_mock_survey
from precompute.observation import InputError

NEGATIVE = (slice(2000, 2100), slice(0, 16), slice(0, 16))  # FITS [wave, y, x]: a corner block, partly off the IFU


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """Two mock MaNGA cubes and bad files made from them: a CSV catalogue with `nsa_z = abc` for the first cube,
    the second cube with negative IVAR in a block, and the second cube cut at the start of its WAVE HDU."""
    root = tmp_path_factory.mktemp("bad-input")
    paths = write_mock_survey(root / "survey", 2, 3, "manga", progress=False)
    zbad, good = map(str, paths["cubes"])
    table = F.read_table(paths["catalogue"])[["plateifu", "nsa_z", "nsa_elpetro_mass"]].astype(object)
    zbad_id = table.plateifu[0]
    table.loc[0, "nsa_z"] = "abc"
    catalogue = root / "drpall.csv"
    table.to_csv(catalogue, index=False)

    negative = root / "negative.fits"
    shutil.copy(good, negative)
    with fits.open(negative, mode="update") as hdul:
        ivar = hdul["IVAR"].data
        ivar[NEGATIVE] = -np.abs(ivar[NEGATIVE]) - 1.0
        already_bad = F.manga_bad(hdul["MASK"].data[NEGATIVE])
    cut = root / "cut.fits"
    with fits.open(good) as hdul:
        wave_starts = hdul.fileinfo(hdul.index_of("WAVE"))["hdrLoc"]
    with open(good, "rb") as f:
        cut.write_bytes(f.read(wave_starts))
    return {"zbad": zbad, "zbad_id": zbad_id, "good": good, "good_z": float(table.nsa_z[1]), "catalogue": catalogue,
            "negative": str(negative), "n_negative": int((~already_bad).sum()), "n_already_bad": int(already_bad.sum()),
            "cut": str(cut)}


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        F.read_observation(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def catalogue_line(survey) -> str:
    """What the catalogue reader reports of the survey's bad CSV cell."""
    return (f"{survey['catalogue']}: column 'nsa_z': 1 value not a number, read as unknown: "
            f"row 1 (plateifu {survey['zbad_id']}) 'abc'")


def no_read_permission(monkeypatch, path):
    """The reader's open of `path` fails as it does for a file without read permission (the tests run as root,
    for whom chmod 000 changes nothing)."""
    real_open = open

    def guarded_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(fitsfile, "open", guarded_open, raising=False)


# ---------------------------------------------------------------- a catalogue cell that is not a number
def test_catalogue_cell_not_a_number_is_unknown_and_reported(survey):
    frame = F.read_catalogue(survey["catalogue"], key="plateifu")
    assert frame["nsa_z"].dtype == np.float64 and np.isnan(frame["nsa_z"][0]) and frame["nsa_z"][1] == survey["good_z"]
    assert frame.attrs["problems"] == [catalogue_line(survey)]
    # the cube whose row is bad is refused with the catalogue's row and column; the other reads its redshift
    message = one_line_error(survey["zbad"], catalogue=frame)
    assert message == (f"{survey['zbad']}: redshift unknown: {survey['catalogue']}: row 1 (plateifu "
                       f"{survey['zbad_id']}): nsa_z 'abc' is not a number")
    assert F.read_observation(survey["good"], catalogue=frame).redshift == survey["good_z"]
    # the same for a catalogue given as a path, or as a table never cleaned by read_catalogue
    assert one_line_error(survey["zbad"], catalogue=survey["catalogue"]) == message
    raw = pd.read_csv(survey["catalogue"])
    assert one_line_error(survey["zbad"], catalogue=raw).endswith(f"row 1 (plateifu {survey['zbad_id']}): nsa_z 'abc' "
                                                                  f"is not a number")


def test_mostly_numeric_columns_keep_numbers_and_text_columns_stay_text(tmp_path):
    path = tmp_path / "props.csv"
    path.write_text("name,z,mass,morphology,ifu\nA,0.01,1e10,Sa,1901\nB,0.02,?,E,1902\nC,0.03,2e10,Sb,12701\n"
                    "D,0.04,3e10,,3701\n")
    frame = F.read_catalogue(path, key="name")
    assert np.isnan(frame["mass"][1]) and frame["mass"][[0, 2, 3]].tolist() == [1e10, 2e10, 3e10]
    assert frame["morphology"].tolist()[:3] == ["Sa", "E", "Sb"] and frame["ifu"].tolist() == [1901, 1902, 12701, 3701]
    assert frame.attrs["problems"] == [f"{path}: column 'mass': 1 value not a number, read as unknown: row 2 (name B) '?'"]


def test_inspect_reports_the_row_and_goes_on(survey, capsys):
    code = F.main([survey["zbad"], survey["good"], "--drpall", str(survey["catalogue"])])
    out, err = capsys.readouterr()
    assert code == 1  # one file failed
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["path"], r["redshift"]) for r in rows] == [(survey["good"], survey["good_z"])]
    assert err.splitlines() == [
        catalogue_line(survey),
        f"{survey['zbad']}: redshift unknown: {survey['catalogue']}: row 1 (plateifu {survey['zbad_id']}): nsa_z 'abc' is not a number",
    ]


# ---------------------------------------------------------------- a file the process may not read
def test_unreadable_file_is_one_line_and_inspect_goes_on(survey, monkeypatch, capsys):
    no_read_permission(monkeypatch, survey["zbad"])
    assert one_line_error(survey["zbad"]) == f"{survey['zbad']}: cannot be read (permission denied)"
    with pytest.raises(InputError, match="cannot be read"):
        F.detect_format(survey["zbad"])
    assert F.main([survey["zbad"], survey["good"]]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line)["path"] for line in out.splitlines()] == [survey["good"]]
    assert err.splitlines() == [f"{survey['zbad']}: cannot be read (permission denied)"]
    # a catalogue that cannot be read is one line too
    no_read_permission(monkeypatch, survey["catalogue"])
    assert F.main([survey["good"], "--drpall", str(survey["catalogue"])]) == 2
    assert capsys.readouterr().err == f"{survey['catalogue']}: cannot be read (permission denied)\n"


# ---------------------------------------------------------------- negative IVAR
def test_negative_ivar_is_masked_and_counted(survey, capsys):
    assert survey["n_negative"] > 0 and survey["n_already_bad"] > 0  # the block is partly off the IFU
    obs = F.read_observation(survey["negative"])
    block = np.moveaxis(np.zeros((4563, *obs.spatial_shape), bool), 0, -1)
    block[NEGATIVE[1], NEGATIVE[2], NEGATIVE[0]] = True
    assert obs.bad[block].all() and (obs.ivar[block] == 0).all() and (obs.ivar >= 0).all()
    # counted once per pixel it newly masks, per spaxel; the pixels masked already were no information anyway
    assert obs.meta["negative_ivar"].shape == obs.spatial_shape
    assert obs.meta["negative_ivar"].sum() == survey["n_negative"]
    assert F.main([survey["negative"], survey["good"]]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["negative_ivar_masked"] for r in rows] == [survey["n_negative"], 0]
    assert err == f"{survey['negative']}: {survey['n_negative']} pixels with negative IVAR (an invalid inverse variance) masked\n"


def test_negative_ivar_in_a_spectra_set_and_a_califa_cube(tmp_path):
    wave = np.linspace(3600.0, 9000.0, 200)
    ivar = np.ones((3, 200))
    ivar[1, 10:15] = -2.0
    mask = np.zeros((3, 200), int)
    mask[1, 10] = 1  # already masked: not counted again
    F.write_spectra_set(tmp_path / "set.fits", wave=wave, flux=np.ones((3, 200)), ivar=ivar, mask=mask)
    obs = F.read_observation(tmp_path / "set.fits")
    assert obs.meta["negative_ivar"].tolist() == [0, 4, 0] and obs.bad[1, 10:15].all()
    assert [int(o.meta["negative_ivar"].sum()) for o in prepare.split_spectra(obs)] == [0, 4, 0]
    # CALIFA stores an error: a negative one is as invalid as a negative inverse variance
    error = np.full((3, 4, 1877), 0.2, np.float32)
    error[1, 2, 100:110] = -0.2
    F.write_califa_cube(tmp_path / "cube.fits", wave_air=F.califa_wave_air(), flux=np.ones_like(error), error=error,
                        badpix=np.zeros(error.shape, np.uint8), header={"OBJECT": "NEG", "MED_VEL": 3000.0})
    cube = F.read_observation(tmp_path / "cube.fits")
    assert cube.meta["negative_ivar"].sum() == 10 and cube.bad[1, 2, 100:110].all() and (cube.ivar >= 0).all()


# ---------------------------------------------------------------- a cube cut before its WAVE extension
def test_cube_cut_before_wave_is_truncated_not_unknown(survey, capsys, tmp_path):
    message = one_line_error(survey["cut"])
    assert message.startswith(f"{survey['cut']}: MaNGA LOGCUBE without its WAVE extension: the file ends after MASK, "
                              f"truncated or incompletely written; HDUs are [PRIMARY, FLUX ")
    with pytest.raises(InputError, match="without its WAVE extension"):
        F.detect_format(survey["cut"])
    assert F.main([survey["cut"], survey["good"]]) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line)["path"] for line in out.splitlines()] == [survey["good"]]
    assert err.splitlines() == [message]
    # a CALIFA cube cut before BADPIX likewise
    shape = (3, 4, 1877)
    F.write_califa_cube(tmp_path / "califa.fits", wave_air=F.califa_wave_air(), flux=np.ones(shape),
                        error=np.ones(shape), badpix=np.zeros(shape, np.uint8), header={"OBJECT": "CUT"})
    with fits.open(tmp_path / "califa.fits") as hdul:
        end = hdul.fileinfo(hdul.index_of("BADPIX"))["hdrLoc"]
    (tmp_path / "califa-cut.fits").write_bytes((tmp_path / "califa.fits").read_bytes()[:end])
    assert "CALIFA V500 cube without its BADPIX extension: the file ends after ERRWEIGHT" in one_line_error(
        tmp_path / "califa-cut.fits")


# ---------------------------------------------------------------- prepare: every case in one batch
def test_prepare_batch_goes_on_past_every_bad_input(survey, tmp_path, monkeypatch, capsys):
    unreadable = tmp_path / "unreadable.fits"
    unreadable.write_bytes(b"")  # exists; its open fails as without read permission
    no_read_permission(monkeypatch, unreadable)
    files = [survey["zbad"], survey["negative"], survey["cut"], str(unreadable)]
    out = tmp_path / "bundle"
    code = prepare.main([*files, "--catalogue", str(survey["catalogue"]), "--key", "plateifu", "--out", str(out),
                         "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    bundle = Bundle(out)
    table = bundle.galaxies
    assert table.source.tolist() == [survey["negative"]] and table.redshift[0] == survey["good_z"]
    assert table["negative_ivar_masked"].tolist() == [survey["n_negative"]]
    assert bundle.metrics["prepare"]["negative_ivar_masked"] == {"pixels": survey["n_negative"], "galaxies": 1}
    provenance = bundle.manifest["provenance"]
    assert provenance["catalogue_problems"] == [catalogue_line(survey)]
    skipped = provenance["skipped"]
    assert len(skipped) == 3 and all("\n" not in line for line in skipped)
    assert sorted(line.split(": ", 1)[0] for line in skipped) == sorted([survey["zbad"], survey["cut"], str(unreadable)])
    assert f"{survey['zbad']}: redshift unknown: {survey['catalogue']}: row 1 (plateifu {survey['zbad_id']}): nsa_z 'abc' is not a number" in skipped
    assert f"{unreadable}: cannot be read (permission denied)" in skipped
    assert any(line.startswith(f"{survey['cut']}: MaNGA LOGCUBE without its WAVE extension") for line in skipped)
