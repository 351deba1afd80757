"""The whole-table timing script writes a record with provenance, and the book's benchmark page
shows every kind of record in results/benchmarks/ (or says that there is none)."""

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_training_writes_after_every_case_so_a_cut_short_benchmark_keeps_its_cases(tmp_path, monkeypatch):
    import pytest

    bench = _load(REPO / "benchmarks" / "bench_training.py", "bench_training")
    monkeypatch.setattr(bench, "bare_loop", lambda config, device: 200.0)

    def loop(config, device, stack=1):
        if config.method == "ogm_ge":
            raise KeyboardInterrupt  # the device's time is up during the second case
        return 100.0

    monkeypatch.setattr(bench, "loop_throughput", loop)
    out = tmp_path / "cpu.json"
    argv = ["--device", "cpu", "--cases", "joint", "ogm_ge", "--repeats", "1", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    record = json.loads(out.read_text())
    assert record["complete"] is False and [r["case"] for r in record["rows"]] == ["joint"]
    assert record["rows"][0]["ratio"] == 0.5

    monkeypatch.setattr(bench, "loop_throughput", lambda config, device, stack=1: 100.0)
    assert bench.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["complete"] is True and record["rows"][1]["throughput_vs_plain"] == 1.0


def test_bench_table_records_the_runs_it_timed(tmp_path, monkeypatch):
    bench_table = _load(REPO / "benchmarks" / "bench_table.py", "bench_table")
    monkeypatch.setenv("MMLAB_CHECKPOINTS", str(tmp_path / "ckpt"))
    out = tmp_path / "table.json"
    code = bench_table.main(["--profile", "smoke", "--dataset", "cgmnist", "--method", "unimodal-gray",
                             "--jobs", "1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["runs"] == 1 and record["all_done"] and not record["whole_table"]
    assert record["per_run"][0]["method"] == "unimodal-gray" and record["per_run"][0]["status"] == "done"
    assert 0 < record["per_run"][0]["wall_s"] <= record["total_wall_s"] + 0.1  # the total is rounded
    assert {"git_commit", "device", "torch_version", "cores", "finished_at"} <= set(record)


def test_benchmark_page_shows_throughput_and_table_records(tmp_path, monkeypatch):
    build_book = _load(REPO / "scripts" / "build_book.py", "build_book")
    monkeypatch.setattr(build_book, "BENCHMARKS", tmp_path)
    page = build_book.benchmarks_page()
    assert "No benchmark records" in page and "No record of the whole table" in page
    row = {"case": "uniform", "samples_per_epoch": 4096, "batch_size": 64, "loop_samples_per_s": 1234.0,
           "bare_samples_per_s": 1300.0, "ratio": 0.949, "peak_memory_mb": 1000.0, "repeats": 3}
    (tmp_path / "cpu.json").write_text(json.dumps({"device": "cpu", "torch_version": "2", "threads": 2,
                                                   "git_commit": "abc", "finished_at": "now", "rows": [row]}))
    (tmp_path / "table-quick-cpu.json").write_text(json.dumps({
        "profile": "quick", "datasets": ["cgmnist", "avdigits"], "runs": 24, "device": "cpu", "cores": 2,
        "jobs": 2, "total_wall_min": 27.25, "all_done": True, "git_commit": "def", "git_dirty": False}))
    page = build_book.benchmarks_page()
    assert "| uniform | 4096 | 64 | 1234 |" in page
    assert "| quick | cgmnist, avdigits | 24 | cpu | 2 | 2 | 27.2 | yes | `def` |" in page
    assert "No record of it is in `results/benchmarks/` yet (it needs a GPU)" in page
    (tmp_path / "cuda-graph-cuda-H200.json").write_text(json.dumps({
        "device": "cuda (H200)", "git_commit": "0123456789abc", "git_dirty": False, "rows": [
            {"case": "mmpareto", "samples_per_epoch": 8192, "eager_samples_per_s": 9000.4,
             "graph_samples_per_s": 45000.0, "graph_vs_eager": 5.0}]}))
    page = build_book.benchmarks_page()
    assert "| cuda (H200) | mmpareto | 8192 | 9000 | 45000 | 5.00 | `0123456789` |" in page
    assert "| uniform | 4096 | 64 | 1234 |" in page  # the probe's record is not read as a throughput record


def test_benchmark_records_are_told_apart_by_kind(tmp_path):
    import pytest

    from mmlab.book import benchmark_records

    (tmp_path / "cpu.json").write_text(json.dumps({"rows": []}))
    (tmp_path / "table-quick-cpu.json").write_text(json.dumps({"runs": 24}))
    (tmp_path / "cuda-graph-cuda-H200.json").write_text(json.dumps({"rows": [1]}))
    assert [p.name for p, _ in benchmark_records(tmp_path, "throughput")] == ["cpu.json"]
    assert [r["runs"] for _, r in benchmark_records(tmp_path, "table")] == [24]
    assert [p.name for p, _ in benchmark_records(tmp_path, "graph")] == ["cuda-graph-cuda-H200.json"]
    assert benchmark_records(tmp_path / "missing", "table") == []
    with pytest.raises(ValueError, match="kind"):
        benchmark_records(tmp_path, "other")


def test_cuda_graph_probe_refuses_a_cpu_and_its_step_trains(tmp_path, capsys):
    import torch

    bench = _load(REPO / "benchmarks" / "bench_cuda_graph.py", "bench_cuda_graph")
    assert bench.main(["--device", "cpu", "--out", str(tmp_path / "x.json")]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    for case in bench.CASES:  # the step that would be captured: it trains, on any device
        config, data, model, optimizer = bench._setup(case, 256, torch.device("cpu"))
        before = [p.detach().clone() for p in model.parameters()]
        step = bench.make_step(model, optimizer, case)
        losses = [step(x, y) for x, y in bench._full_batches(data, 0, config.batch_size)]
        assert len(losses) == 256 // config.batch_size and all(torch.isfinite(loss) for loss in losses)
        assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if b.requires_grad)
    assert bench.eager_throughput("mmpareto", 256, torch.device("cpu")) > 0  # the eager timing runs anywhere
