"""`python -m precompute build FILES|DIRS|GLOBS --catalogue CAT`: a folder of survey files with a corrupt and a
non-FITS file, globs and lists giving the same bundle, the dry run, and a bundle never replaced by another build
without --overwrite."""
import json
import random
import shutil

import numpy as np
import pytest

from precompute import schema
from precompute.__main__ import main as precompute_main
from precompute.bundle import Bundle
from precompute.mock.survey import write_mock_survey

# Several builds from files: minutes on 2 cores. One xdist worker runs them all, so the module's survey files and
# folder build are made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("build_inputs")]

N_CUBES = 8
# Small maps, no cube models: what these tests check is which files go in and what the plan predicts.
CONFIG = {"seed": 4, "device": "cpu", "embedding_models": [],
          "desom1": {"rows": 4, "cols": 4, "max_train_spectra": 800, "pretrain_epochs": 1, "epochs": 1},
          "desom2": {"rows": 3, "cols": 3, "pretrain_epochs": 1, "epochs": 2},
          "projections": {"n_neighbours": 3, "cluster_ks": [2, 3], "umap_neighbours": 4}}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A folder as an astronomer has it: cubes, the drpall catalogue, truth files, a corrupt cube, a README."""
    root = tmp_path_factory.mktemp("survey")
    paths = write_mock_survey(root / "manga", N_CUBES, 21, "manga", progress=False)
    (root / "manga" / "manga-9999-12701-LOGCUBE.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    (root / "manga" / "README.txt").write_text("cubes from the mock survey\n")
    config = root / "config.json"
    config.write_text(json.dumps(CONFIG))
    return {"folder": root / "manga", "catalogue": paths["catalogue"], "config": config, "root": root}


def build(capsys, *args) -> tuple[int, str, str]:
    code = precompute_main(["build", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def folder_build(survey, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "from-folder"
    code = precompute_main(["build", str(survey["folder"]), "--catalogue", str(survey["catalogue"]),
                            "--config", str(survey["config"]), "--out", str(out), "--workers", "0"])
    assert code == 0
    return out


def test_a_folder_builds_every_cube_and_reports_what_it_skips(survey, folder_build):
    bundle = Bundle(folder_build)
    assert len(bundle.galaxies) == N_CUBES
    skipped = bundle.manifest["provenance"]["skipped"]
    corrupt, readme = survey["folder"] / "manga-9999-12701-LOGCUBE.fits", survey["folder"] / "README.txt"
    assert sum(line.startswith(f"{corrupt}: ") for line in skipped) == 1
    assert sum(line.startswith(f"{readme}: not a FITS file") for line in skipped) == 1
    inputs = bundle.manifest["provenance"]["inputs"]
    assert str(survey["catalogue"]) not in inputs["files"], "the catalogue is not an input"
    assert inputs["count"] == len(inputs["files"]) and inputs["bytes"] > 0
    assert bundle.galaxies["redshift"].notna().all()  # matched to the drpall rows


def test_a_glob_and_a_shuffled_list_give_the_same_bundle(survey, folder_build, tmp_path, capsys):
    cubes = sorted(str(p) for p in survey["folder"].glob("manga-*-LOGCUBE.fits") if "9999" not in p.name)
    shuffled = random.Random(1).sample(cubes, len(cubes))
    pattern = str(survey["folder"] / "manga-90*-LOGCUBE.fits")  # mock plates are 9000x; the corrupt one is 9999
    for name, inputs in (("glob", [pattern]), ("list", shuffled)):
        code, _, err = build(capsys, *inputs, "--catalogue", survey["catalogue"], "--config", survey["config"],
                             "--out", tmp_path / name, "--workers", "0")
        assert code == 0, err
    a, b, c = (Bundle(p) for p in (tmp_path / "glob", tmp_path / "list", folder_build))
    for other in (b, c):
        assert list(a.galaxies["galaxy_id"]) == list(other.galaxies["galaxy_id"])
        assert a.bins[["galaxy_id", "bin_id", "desom1_node"]].equals(other.bins[["galaxy_id", "bin_id", "desom1_node"]])
        assert np.array_equal(a.read(schema.FLUX), other.read(schema.FLUX))


def test_the_dry_run_writes_nothing_and_predicts_the_binned_spectra(survey, folder_build, tmp_path, capsys):
    out = tmp_path / "planned"
    code, stdout, err = build(capsys, survey["folder"], "--catalogue", survey["catalogue"], "--config",
                              survey["config"], "--out", out, "--dry-run", "--workers", "0")
    assert code == 0, err
    plan = json.loads(stdout.strip().splitlines()[-1])
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    real = len(Bundle(folder_build).bins)
    assert abs(plan["binned_spectra"] - real) <= 0.2 * real, (plan["binned_spectra"], real)
    assert plan["galaxies"] == N_CUBES and plan["formats"] == {"manga": N_CUBES}
    assert any(line.startswith(str(survey["folder"] / "README.txt")) for line in plan["skipped"])
    assert plan["galaxies_without_catalogue_row"] == []
    assert plan["bundle_gb"] > 0 and plan["staging_gb"] > 0 and plan["peak_memory_per_worker_gb"] > 0
    assert "binned spectra: ~" in stdout and "peak memory per worker" in stdout


def test_another_build_never_replaces_a_bundle_without_overwrite(survey, folder_build, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(folder_build, out)
    before = (out / "manifest.json").read_text()
    code, _, err = build(capsys, survey["folder"], "--catalogue", survey["catalogue"], "--config", survey["config"],
                         "--out", out, "--seed", "5", "--workers", "0")
    assert code == 1 and "holds a bundle built from other inputs or another config" in err and "--overwrite" in err
    assert (out / "manifest.json").read_text() == before
    code, _, err = build(capsys, "--galaxies", "16", "--out", survey["root"], "--workers", "0")
    assert code == 1 and "holds no bundle" in err
    code, _, err = build(capsys, survey["folder"], "--catalogue", survey["catalogue"], "--config", survey["config"],
                         "--out", out, "--seed", "5", "--workers", "0", "--overwrite")
    assert code == 0, err
    assert Bundle(out).manifest["seed"] == 5
