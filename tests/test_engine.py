"""The build on Dask: the same bundle in-process, on a LocalCluster and on a `dask scheduler` + `dask worker`
cluster started here, one of whose workers is killed mid-preparation; a driver killed mid-build and started again.

Every process a test starts is bound to 127.0.0.1 and ended by the test, whatever happens."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from precompute import schema
from precompute.build import build
from precompute.bundle import Bundle
from precompute.config import load_config
from precompute.schema import validate
from precompute.shards import LOG, staging_folder

# Several builds and clusters: minutes on 2 cores. One xdist worker runs them all, so the reference build
# (`in_process`, module-wide) is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("engine")]

# Small maps, no cube models: what differs between engines is the preparation, which this keeps whole.
ENGINE_BUILD = dict(seed=5, device="cpu", mock={"galaxies": 14}, embedding_models=[],
                    desom1={"rows": 4, "cols": 4, "max_train_spectra": 800, "pretrain_epochs": 1, "epochs": 1},
                    desom2={"rows": 3, "cols": 3, "pretrain_epochs": 1, "epochs": 2})


def engine_config() -> dict:
    return load_config(**ENGINE_BUILD)


def fingerprint_of(path) -> dict:
    bundle = Bundle(path)
    return {"galaxies": bundle.galaxies.to_dict("list"),
            "bins": bundle.bins[["galaxy_id", "bin_id", "snr", "desom1_node"]].to_dict("list"),
            "flux": np.asarray(bundle.read(schema.FLUX)).copy(),
            "fingerprints": np.asarray(bundle.read(schema.FINGERPRINTS)).copy()}


def assert_same_bundle(a, b):
    assert a["galaxies"]["galaxy_id"] == b["galaxies"]["galaxy_id"]
    assert a["bins"] == b["bins"]
    assert np.array_equal(a["flux"], b["flux"]) and np.array_equal(a["fingerprints"], b["fingerprints"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def one_worker_cluster():
    """A one-worker LocalCluster for the builds that need single-threaded workers but test no engine of their own
    (the reference, the resumed model stages): each new cluster's worker pays the imports again (~10 CPU-s)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def in_process(one_worker_cluster, tmp_path_factory):
    """The reference: one single-threaded worker process (an in-process build keeps BLAS's threads, which can
    change the last bits of a prepared spectrum)."""
    path = build(engine_config(), tmp_path_factory.mktemp("engine") / "one-worker", scheduler=one_worker_cluster)
    return fingerprint_of(path)


def test_a_local_cluster_gives_the_same_bundle(in_process, tmp_path):
    path = build(engine_config(), tmp_path / "local", workers=2)
    assert_same_bundle(fingerprint_of(path), in_process)
    assert validate(path) == []
    assert not list(tmp_path.glob(".local.*")), "staging or temporary folders left behind"
    assert oct(path.stat().st_mode & 0o777) == oct(0o777 & ~current_umask())


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_a_scheduler_and_workers_started_by_hand_give_the_same_bundle_though_a_worker_is_killed(in_process, tmp_path):
    """`dask scheduler` + `dask worker` processes, as on a cluster; one worker is SIGKILLed once the preparation
    has begun (its nanny starts a new one, the scheduler reruns its tasks): the bundle is the reference's."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    processes = [subprocess.Popen([bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    out = tmp_path / "cluster"
    log = staging_folder(out, engine_config()) / LOG
    stop = threading.Event()
    killed = []
    try:
        address = f"tcp://127.0.0.1:{port}"
        processes.append(subprocess.Popen([bin_dir / "dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
                                           "--no-dashboard", "--host", "127.0.0.1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            victim = next(iter(client.run(os.getpid).values()))

        def kill_once_started():
            while not stop.is_set():  # bounded by the build below, which sets `stop` when it returns
                if log.exists() and len(log.read_text().split()) >= 2:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_once_started, daemon=True)
        killer.start()
        try:
            path = build(engine_config(), out, scheduler=address)
        finally:
            stop.set()
            killer.join(timeout=10)
        assert killed == [victim], "the build ended before a worker could be killed"
        assert_same_bundle(fingerprint_of(path), in_process)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_killed_build_resumes_without_preparing_a_galaxy_twice(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(ENGINE_BUILD))
    out = tmp_path / "resumed"
    command = [sys.executable, "-m", "precompute", "build", "--config", str(config), "--out", str(out),
               "--workers", "0"]
    log = staging_folder(out, engine_config()) / LOG
    # One OpenMP thread, as a cluster slot gives: no stage may change it (umap's numba once reset it to every core)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and len(log.read_text().split()) >= 4):
            assert first.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "no shard was prepared within 300 s"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    prepared_before = log.read_text().split()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    provenance = Bundle(out).manifest["provenance"]
    assert provenance["torch_threads"] == 1
    shards = provenance["shards"]
    n = ENGINE_BUILD["mock"]["galaxies"]
    assert shards == {"reused": len(prepared_before), "prepared": n - len(prepared_before)}
    assert validate(out) == []
    assert not list(tmp_path.glob(".resumed.*")), "staging or temporary folders left behind"


def test_a_rerun_starts_after_the_last_finished_model_stage(in_process, one_worker_cluster, tmp_path, monkeypatch):
    from precompute import embeddings, spectral_maps

    def killed(*args, **kwargs):
        raise RuntimeError("the build was stopped during the embeddings stage")

    out = tmp_path / "staged"
    with monkeypatch.context() as patched:
        patched.setattr(embeddings, "build_embeddings", killed)
        with pytest.raises(RuntimeError, match="embeddings stage"):
            build(engine_config(), out, scheduler=one_worker_cluster)
    assert not out.exists()

    def must_not_run(*args, **kwargs):
        raise AssertionError("the spectral maps were trained again")

    monkeypatch.setattr(spectral_maps, "build_spectral_maps", must_not_run)
    build(engine_config(), out, scheduler=one_worker_cluster)
    assert Bundle(out).manifest["provenance"]["resumed_stages"] == ["core", "spectral maps"]
    assert_same_bundle(fingerprint_of(out), in_process)
    assert validate(out) == []
    assert not list(tmp_path.glob(".staged.*")), "staging, checkpoint or temporary folders left behind"
