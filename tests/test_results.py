"""The results store: atomic writes, no silent overwrite, clear errors, load_or_run."""

import json
import os

import pytest
import torch

import mmlab.training as training
from mmlab import ResultsFileError, RunConfig
from mmlab.results import ResultsStore, read_record
from mmlab.training import load_or_run


def test_load_or_run_trains_once_then_loads(tiny_config, results_dir, monkeypatch):
    config = tiny_config("joint", epochs=1)
    store = ResultsStore()
    assert store.root == results_dir
    first = load_or_run(config, progress=False)
    path = store.path_for(config)
    assert path.exists() and path.is_relative_to(results_dir / "smoke" / "cgmnist" / "joint")
    assert not (results_dir / ".checkpoints" / f"{config.key}.pt").exists()  # removed once stored

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "train", boom)
    again = load_or_run(config, progress=False)
    assert again["history"] == json.loads(json.dumps(first["history"]))  # the stored run, as trained
    assert again["provenance"]["profile"] == "smoke"
    with pytest.raises(AssertionError, match="trained again"):
        load_or_run(config, progress=False, overwrite=True)


def test_finished_record_is_not_overwritten(tiny_config, results_dir):
    config = tiny_config("joint", epochs=1)
    record = load_or_run(config, progress=False)
    store = ResultsStore()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        store.save(record)
    store.save({**record, "note": "saved again"}, overwrite=True)
    assert read_record(store.path_for(config))["note"] == "saved again"  # overwrite=True did replace it


def test_write_is_atomic(tiny_config, results_dir, monkeypatch):
    config = tiny_config("joint", epochs=1)
    record = load_or_run(config, progress=False)
    store = ResultsStore()
    path = store.path_for(config)
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save({**record, "final": {"epoch": 99}}, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_corrupt_and_foreign_files_are_refused_with_their_name(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1, "key": ')
    with pytest.raises(ResultsFileError, match="bad.json"):
        read_record(bad)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    with pytest.raises(ResultsFileError, match="lacks"):
        read_record(foreign)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ResultsFileError, match="list.json does not hold a JSON object"):
        read_record(listed)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"schema": 2, "key": "k", "config": {}, "history": [], "final": {}, "provenance": {}}))
    with pytest.raises(ResultsFileError, match="future.json has schema 2, expected 1"):
        read_record(future)


def test_a_corrupt_or_foreign_checkpoint_stops_the_run_and_is_kept(tiny_config, tmp_path):
    from mmlab.training import train
    from mmlab.training.checkpoint import load_checkpoint, save_checkpoint

    config = tiny_config("joint", epochs=1)
    path = tmp_path / f"{config.key}.pt"
    path.write_bytes(b"partial")
    with pytest.raises(RuntimeError, match=f"{path} cannot be read .*Delete it"):
        train(config, checkpoint_dir=tmp_path, progress=False)
    assert path.read_bytes() == b"partial"  # nothing lost: the user decides

    other = tiny_config("uniform", epochs=2)  # a real checkpoint, of another config, under this config's name
    def stop(epoch, metrics):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(other, checkpoint_dir=tmp_path / "other", progress=False, callbacks=[stop])
    save_checkpoint(path, load_checkpoint(tmp_path / "other" / f"{other.key}.pt"))
    with pytest.raises(RuntimeError, match="belongs to another config; delete it"):
        train(config, checkpoint_dir=tmp_path, progress=False)
    assert path.exists()


def test_records_filter(tiny_config, results_dir):
    load_or_run(tiny_config("joint", epochs=1), progress=False)
    load_or_run(tiny_config("joint", epochs=1, seed=1), progress=False)
    store = ResultsStore()
    assert len(store.records(profile="smoke", label="joint")) == 2
    assert store.records(profile="full") == []


def test_kept_weights_reproduce_the_recorded_accuracy(tiny_config, results_dir, monkeypatch):
    from mmlab.data.registry import get_dataset
    from mmlab.training import evaluate, load_trained_model
    from mmlab.training.batches import ResidentBatches

    config = tiny_config("uniform", epochs=1)
    load_or_run(config, progress=False)  # a record without weights ...
    store = ResultsStore()
    assert not store.weights_path(config).exists()
    model, record = load_trained_model(config, progress=False)  # ... is trained again, keeping them
    assert store.weights_path(config).exists()
    spec = get_dataset("cgmnist")
    splits = spec.load_splits(train_size=config.train_size, val_size=config.val_size,
                              test_size=config.test_size, data_seed=config.data_seed)
    test = ResidentBatches(splits["test"], ["gray", "color"], 1000, torch.device("cpu"))
    metrics = evaluate(model, test, spec.num_classes, "test")
    assert metrics["test/acc"] == pytest.approx(record["final"]["test/acc"], abs=1e-9)
    assert metrics["test/acc/gray"] == pytest.approx(record["final"]["test/acc/gray"], abs=1e-9)

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "train", boom)
    load_trained_model(config, progress=False)  # weights and record both there: nothing to train


def test_checkpoints_go_where_MMLAB_CHECKPOINTS_says(tmp_path, monkeypatch):
    """A remote machine sends back one named folder: the store's unfinished runs keep their
    checkpoints there when ``MMLAB_CHECKPOINTS`` is set, and the sweep looks for them there."""
    from mmlab.sweep import sweep_status

    store = ResultsStore(tmp_path / "results")
    monkeypatch.delenv("MMLAB_CHECKPOINTS", raising=False)
    assert store.checkpoint_dir == tmp_path / "results" / ".checkpoints"
    monkeypatch.setenv("MMLAB_CHECKPOINTS", str(tmp_path / "elsewhere"))
    assert store.checkpoint_dir == tmp_path / "elsewhere"
    config = RunConfig.from_profile(profile="smoke", method="joint")
    assert sweep_status([config], store)["status"].tolist() == ["train"]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / f"{config.key}.pt").write_bytes(b"")
    status = sweep_status([config], store)
    assert status["status"].tolist() == ["resume"]
    assert status["done"].isna().all()  # an unreadable checkpoint: no count (the run itself says why)


def test_source_digest_sees_every_edit_of_the_package(tmp_path):
    from mmlab.provenance import source_digest

    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    first = source_digest(package)
    source_digest.cache_clear()
    assert source_digest(package) == first  # the same files, the same digest
    (package / "notes.txt").write_text("still not code")
    source_digest.cache_clear()
    assert source_digest(package) == first
    (package / "sub" / "b.py").write_text("y = 3\n")
    source_digest.cache_clear()
    edited = source_digest(package)
    (package / "sub" / "b.py").rename(package / "b.py")  # same content, another path
    source_digest.cache_clear()
    assert len({first, edited, source_digest(package)}) == 3
    source_digest.cache_clear()


def test_a_cached_record_made_by_other_code_is_returned_with_a_warning(tiny_config, results_dir, monkeypatch):
    import warnings

    from mmlab.errors import OtherCodeWarning
    from mmlab.provenance import source_digest

    config = tiny_config("joint", epochs=1)
    record = load_or_run(config, progress=False)
    assert record["provenance"]["source_digest"] == source_digest()  # the code that trained it
    store = ResultsStore()
    with warnings.catch_warnings():
        warnings.simplefilter("error", OtherCodeWarning)
        load_or_run(config, progress=False)  # the same code: no warning
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained again"))

    def stored_with(**provenance):
        store.save({**record, "provenance": {**record["provenance"], **provenance}}, overwrite=True)

    stored_with(source_digest="0123456789abcdef")
    with pytest.warns(OtherCodeWarning, match=r"joint \(seed 0, profile smoke\).*other code.*overwrite=True"):
        again = load_or_run(config, progress=False)
    assert again["history"] == json.loads(json.dumps(record["history"]))  # returned as recorded
    with pytest.warns(OtherCodeWarning):
        training.load_or_run_stacked([config], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OtherCodeWarning)
        stored_with(source_digest="0123456789abcdef", profile="full")  # a reproduction record: kept as is
        load_or_run(config, progress=False)
        stored_with(source_digest=None)  # made before records had a digest: not judged
        load_or_run(config, progress=False)
