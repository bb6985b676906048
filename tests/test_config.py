"""The config is checked before any work: unknown keys, wrong types and impossible builds are refused at once with
a message naming the key path; only the command line turns these errors into exit codes."""
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from precompute import __main__ as cli
from precompute.bundle import BundleError
from precompute.config import (DEFAULT_CONFIG, ConfigError, check_build, config_problems, load_config,
                               training_galaxies)
from precompute.device import resolve_device
from precompute.prepare import assign_split

CALIFA = Path(__file__).resolve().parents[1] / "data" / "configs" / "califa.json"


def write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def problems_of(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(**overrides)
    return caught.value.problems


# -- load_config ------------------------------------------------------------------------------------------------

def test_defaults_and_the_califa_config_pass():
    assert config_problems(DEFAULT_CONFIG) == []
    config = load_config(CALIFA)
    assert config["prepare"]["wave_min"] == 3750.0 and config["mock"]["format"] == "califa"
    assert config["desom1"] == DEFAULT_CONFIG["desom1"]  # sections the file leaves out keep their defaults


def test_unknown_key_is_refused_with_a_suggestion(tmp_path):
    bad = write_json(tmp_path / "bad.json", {"desom1": {"epoch": 3}, "desomm2": {}})
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.problems == [f"{bad}: desom1.epoch: unknown key; did you mean epochs?",
                                     f"{bad}: desomm2: unknown key; did you mean desom2?"]
    assert problems_of(contrastive={"augment": {"p_nois": 0.5}}) == [
        "contrastive.augment.p_nois: unknown key; did you mean p_noise?"]
    assert problems_of(desom1={"zzz": 1})[0].startswith("desom1.zzz: unknown key; expected one of rows, cols, ")


def test_wrong_types_name_the_key_path_expected_and_got(tmp_path):
    bad = write_json(tmp_path / "bad.json", {"desom1": {"rows": "fifteen"}})
    with pytest.raises(ConfigError, match="desom1.rows: expected an integer, got 'fifteen' \\(str\\)") as caught:
        load_config(bad)
    assert str(caught.value) == f"{bad}: desom1.rows: expected an integer, got 'fifteen' (str)"

    # Every problem is listed at once, one per line
    problems = problems_of(desom1={"epochs": 2.5, "channels": [4, True], "topology": "hex"}, seed=True,
                           projections=3, embedding_models=["contrastive", "pca"])
    assert problems == [
        "desom1.epochs: expected an integer, got 2.5 (float)",
        "desom1.channels[1]: expected an integer, got True (bool)",  # a bool is never a number
        "desom1.topology: expected one of rectangular, hexagonal, got 'hex'",
        "seed: expected an integer, got True (bool)",
        "projections: expected a section (a JSON object), got 3 (int)",
        "embedding_models[1]: expected one of contrastive, anomaly, image_vae, got 'pca'",
    ]


def test_values_outside_their_range_are_refused():
    assert problems_of(desom1={"rows": 0}, prepare={"val_fraction": 1.5}, desom2={"backend": "som"}) == [
        "desom1.rows: expected an integer >= 1, got 0",
        "prepare.val_fraction: expected a number between 0 and 1, got 1.5",
        "desom2.backend: expected one of desom, minisom, got 'som'",
    ]
    assert problems_of(prepare={"norm_window": [4150.0, 4050.0]}) == [
        "prepare.norm_window: expected [low, high] with low <= high, got [4150.0, 4050.0]"]


def test_keys_whose_default_does_not_show_their_type():
    config = load_config(desom1={"sigma_start": 7, "gamma": 1}, inputs={"catalogue": "drpall.fits",
                                                                         "column_map": {"nsa_z": "redshift"}})
    assert config["desom1"]["sigma_start"] == 7 and config["desom1"]["gamma"] == 1  # an int where a float is
    assert load_config(desom2={"sigma_start": None})["desom2"]["sigma_start"] is None
    assert problems_of(desom1={"sigma_start": "big"}, inputs={"catalogue": 3, "files": "a.fits",
                                                              "column_map": {"nsa_z": 1}}) == [
        "desom1.sigma_start: expected a number or null, got 'big' (str)",
        "inputs.catalogue: expected a string or null, got 3 (int)",
        "inputs.files: expected a list of strings, got 'a.fits' (str)",
        "inputs.column_map.nsa_z: expected a string, got 1 (int)",
    ]
    for allowed in ("auto", None, 2000):
        assert load_config(desom1={"max_train_spectra": allowed})["desom1"]["max_train_spectra"] == allowed
    assert problems_of(desom1={"max_train_spectra": "all"}) + problems_of(desom1={"max_train_spectra": 0}) == [
        'desom1.max_train_spectra: expected an integer >= 1, "auto" or null, got \'all\' (str)',
        'desom1.max_train_spectra: expected an integer >= 1, "auto" or null, got 0 (int)']


def test_unusable_files_are_config_errors_naming_the_file(tmp_path):
    listed = write_json(tmp_path / "list.json", [{"desom1": {"rows": 10}}])
    with pytest.raises(ConfigError, match=f"^{listed}: expected a JSON object of config sections.*got a list$"):
        load_config(listed)
    broken = tmp_path / "broken.json"
    broken.write_text('{"desom1": {"rows": 10,}}')
    with pytest.raises(ConfigError, match=f"^{broken}: not valid JSON \\(Expecting property name"):
        load_config(broken)
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'absent.json'}: cannot read config file"):
        load_config(tmp_path / "absent.json")


# -- checks at the start of a build -----------------------------------------------------------------------------

def test_training_galaxies_are_those_prepare_leaves_for_training():
    for val_fraction in (0.0, 0.14, 0.25, 0.5):
        for n in range(2, 40):
            groups = np.arange(n) % 3  # prepare holds out within each morphology
            split = assign_split(groups, val_fraction, seed=0)
            assert training_galaxies(n, val_fraction) == (split == "train").sum()


def test_check_build_refuses_a_mock_survey_too_small_for_the_projections():
    with pytest.raises(ConfigError) as caught:
        check_build(load_config(mock={"galaxies": 12}, device="cpu"))
    assert caught.value.problems == [
        "mock.galaxies: 12 galaxies leave 10 for training (prepare.val_fraction = 0.14), too few for 10 neighbours "
        "(projections.n_neighbours) and k = 5 clusters (projections.cluster_ks); use at least 13 galaxies"]
    check_build(load_config(mock={"galaxies": 13}, device="cpu"))
    check_build(load_config(mock={"galaxies": 6}, device="cpu", projections={"n_neighbours": 3, "cluster_ks": [2]}))


def test_check_build_refuses_missing_inputs_and_unknown_devices(tmp_path):
    cube = tmp_path / "manga-1-LOGCUBE.fits"
    cube.write_bytes(b"")  # existence is all that is checked before reading
    config = load_config(inputs={"files": [str(cube), str(tmp_path / "gone.fits")],
                                 "catalogue": str(tmp_path / "drpall.fits")}, device="gpu")
    with pytest.raises(ConfigError) as caught:
        check_build(config)
    assert caught.value.problems == [
        f"inputs.files: {tmp_path / 'gone.fits'}: no such file or directory",
        f"inputs.catalogue: {tmp_path / 'drpall.fits'}: no such file",
        "device: expected auto, cpu, cuda, cuda:N or another torch device, got 'gpu'",
    ]
    with pytest.raises(ConfigError, match="mock.format: expected one of manga, califa, sed, got 'sdss'"):
        check_build(load_config(mock={"format": "sdss"}, device="cpu"))


def test_check_build_refuses_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, wherever this runs
    with pytest.raises(ConfigError, match="^device: 'cuda' asked for, but torch sees no GPU; use auto or cpu$"):
        check_build(load_config(device="cuda"))


def test_resolve_device_returns_a_torch_device_name():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")  # "cpu" on the CI machine
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="got 'gpu'"):
        resolve_device("gpu")


def test_device_module_imports_nothing_of_the_project():
    loaded = subprocess.run([sys.executable, "-c", "import sys, precompute.device; "
                             "print(sorted(m for m in sys.modules if m.startswith(('precompute.', 'torch'))))"],
                            capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['precompute.device']"


# -- the command line -------------------------------------------------------------------------------------------

def run_cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "precompute", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_build_refuses_a_bad_config_before_any_work(tmp_path):
    bad = write_json(tmp_path / "bad.json", {"desom1": {"epoch": 3, "rows": "fifteen"}})
    done = run_cli("build", "--config", bad, "--out", tmp_path / "bundle", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"precompute build: {bad}: desom1.epoch: unknown key; did you mean epochs?",
        f"precompute build: {bad}: desom1.rows: expected an integer, got 'fifteen' (str)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # no bundle, no temporary folder


def test_cli_build_refuses_too_few_galaxies_at_once(tmp_path):
    done = run_cli("build", "--galaxies", 12, "--device", "cpu", "--out", tmp_path / "bundle", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("precompute build: mock.galaxies: 12 galaxies leave 10 for training")
    assert list(tmp_path.iterdir()) == []


def test_cli_prepare_refuses_missing_files(tmp_path, capsys):
    assert cli.main(["prepare", str(tmp_path / "gone.fits"), "--out", str(tmp_path / "bundle")]) == 2
    assert capsys.readouterr().err == f"precompute prepare: inputs.files: {tmp_path / 'gone.fits'}: no such file or directory\n"
    assert not (tmp_path / "bundle").exists()


def test_cli_turns_other_library_errors_into_exit_code_1(monkeypatch, capsys):
    message = "data/bundles/x: bundle is incomplete, missing galaxies.parquet"

    def broken_step(argv):
        raise BundleError(message)

    monkeypatch.setitem(sys.modules, "broken_step", types.SimpleNamespace(main=broken_step))
    monkeypatch.setitem(cli.STEPS, "broken", ("broken_step", "raises a BundleError"))
    assert cli.main(["broken"]) == 1
    assert capsys.readouterr().err == f"precompute broken: {message}\n"
