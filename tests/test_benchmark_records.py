"""The whole-table timing script writes a record with provenance, and the book's benchmark page
shows every kind of record in results/benchmarks/ (or says that there is none)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

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

    def loop(config, device, stack=1, cuda_graph=False):
        if config.method == "ogm_ge":
            raise KeyboardInterrupt  # the device's time is up during the second case
        return 100.0

    monkeypatch.setattr(bench, "loop_throughput", loop)
    out = tmp_path / "cpu.json"
    argv = ["--device", "cpu", "--cases", "joint", "ogm_ge", "--repeats", "1", "--out", str(out),
            "--note", "a test"]
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    record = json.loads(out.read_text())
    assert record["complete"] is False and [r["case"] for r in record["rows"]] == ["joint"]
    assert record["note"] == "a test"
    assert record["rows"][0]["ratio"] == 0.5

    monkeypatch.setattr(bench, "loop_throughput", lambda config, device, stack=1, cuda_graph=False: 100.0)
    assert bench.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["complete"] is True and record["rows"][1]["throughput_vs_plain"] == 1.0
    assert record["rows"][0]["cuda_graph"] is False


def test_every_bench_case_times_the_epoch_it_says_beside_a_plain_method_that_is_a_case(tmp_path, monkeypatch):
    """Each case's config is valid and its plain method is a case too; a case that trains more epochs than two
    (ReconBoost's) is timed on its last, and that epoch is the stage the case is named after."""
    from mmlab import RunConfig
    from mmlab.methods import build_method

    bench = _load(REPO / "benchmarks" / "bench_training.py", "bench_training")
    assert set(bench.PLAIN) <= set(bench.CASES) and set(bench.PLAIN.values()) <= set(bench.CASES)
    seen = []
    monkeypatch.setattr(bench, "bare_loop", lambda config, device: 200.0)
    monkeypatch.setattr(bench, "loop_throughput",
                        lambda config, device, stack=1, cuda_graph=False: seen.append(config) or 100.0)
    cases = ["reconboost, boosting stage", "reconboost, rectification", "udi"]
    assert bench.main(["--device", "cpu", "--cases", *cases, "--repeats", "1", "--out", str(tmp_path / "x.json")]) == 0
    timed = {c.epochs: c for c in seen if c.method == "reconboost"}
    for epochs, rectifying in ((3, False), (4, True)):
        config = timed[epochs]
        method = build_method("reconboost", ["gray", "color"], **config.method_options)
        method._modalities = ("gray", "color")
        assert method.phase(epochs - 1)[2] is rectifying
    assert [c.epochs for c in seen if c.method in ("udi", "uniform")] == [2, 2, 2, 2]  # udi and three plain runs
    for name, case in bench.CASES.items():
        case = {k: v for k, v in case.items() if k not in ("stack", "cuda_graph")}
        if case.get("dataset") != "cremad_shaped":
            RunConfig.from_profile(profile="quick", **{"epochs": 2, "train_size": 64, **case}).validate()


def test_bench_training_refuses_the_cuda_graph_cases_on_a_cpu(capsys):
    import pytest

    bench = _load(REPO / "benchmarks" / "bench_training.py", "bench_training")
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--cases", "uniform, CUDA graph"])
    assert "need a CUDA device" in capsys.readouterr().err


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
    assert record["per_run"][0]["data_protocol"] == "mmlab-2"  # the plan's current protocol, named per run
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
    assert "| uniform | 4096 | 64 | 1234 |" in page and "## cpu: CG-MNIST" in page and "cut short" not in page
    assert "| quick | cgmnist, avdigits | 24 | cpu | 2 | 2 | 27.2 | yes | `def` |" in page
    assert "No record of it is in `results/benchmarks/` yet (it needs a GPU)" in page
    (tmp_path / "cuda-graph-cuda-H200.json").write_text(json.dumps({
        "device": "cuda (H200)", "git_commit": "0123456789abc", "git_dirty": False, "rows": [
            {"case": "mmpareto", "samples_per_epoch": 8192, "eager_samples_per_s": 9000.4,
             "graph_samples_per_s": 45000.0, "graph_vs_eager": 5.0}]}))
    page = build_book.benchmarks_page()
    assert "| cuda (H200) | mmpareto | 8192 | 9000 | 45000 | 5.00 | `0123456789` |" in page
    assert "| uniform | 4096 | 64 | 1234 |" in page  # the probe's record is not read as a throughput record
    assert "## Runs side by side" in page and "No record of it is in `results/benchmarks/` yet.\n" in page
    (tmp_path / "parallel-cpu.json").write_text(json.dumps({
        "device": "cpu", "case": "mgda", "samples_per_epoch": 4096, "git_commit": "fedcba9876543", "rows": [
            {"jobs": 1, "threads_per_job": 2, "total_samples_per_s": 1400.2, "vs_one_run": 1.0},
            {"jobs": 2, "threads_per_job": 1, "total_samples_per_s": 1820.0, "vs_one_run": 1.3}]}))
    page = build_book.benchmarks_page()
    assert "| cpu | mgda | 4096 | 2 | 1 | 1820 | 1.30 | `fedcba9876` |" in page
    assert page.count("| cpu | mgda |") == 2 and "| uniform | 4096 | 64 | 1234 |" in page
    assert "Each figure is the median of 3 alternating measurements." in page
    assert "(no record above has them yet: they need a GPU)" in page
    captured = dict(row, case="uniform, CUDA graph", cuda_graph=True, repeats=1)
    (tmp_path / "cuda-H200.json").write_text(json.dumps({"device": "cuda (H200)", "torch_version": "2",
                                                         "git_commit": "abc", "finished_at": "later",
                                                         "rows": [captured]}))
    page = build_book.benchmarks_page()
    assert "| uniform, CUDA graph | 4096 |" in page and "no record above has them yet" not in page
    assert "Each figure is one measurement." in page


def test_benchmark_records_are_told_apart_by_kind(tmp_path):
    import pytest

    from mmlab.book import benchmark_records

    (tmp_path / "cpu.json").write_text(json.dumps({"rows": []}))
    (tmp_path / "table-quick-cpu.json").write_text(json.dumps({"runs": 24}))
    (tmp_path / "cuda-graph-cuda-H200.json").write_text(json.dumps({"rows": [1]}))
    (tmp_path / "parallel-cpu.json").write_text(json.dumps({"rows": [2]}))
    assert [r["rows"] for _, r in benchmark_records(tmp_path, "parallel")] == [[2]]
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


def test_bench_parallel_sums_the_runs_side_by_side_and_writes_its_record(tmp_path, monkeypatch):
    bench = _load(REPO / "benchmarks" / "bench_parallel.py", "bench_parallel")
    seen = []

    def fake_side_by_side(config, device, jobs, cores):  # N runs at once: each a little slower than alone
        seen.append((jobs, config.method, config.train_size))
        return [100.0 / (1 + 0.25 * (jobs - 1))] * jobs if jobs > 1 else [100.0 + len(seen)]

    monkeypatch.setattr(bench, "side_by_side", fake_side_by_side)
    monkeypatch.setattr(bench, "available_cores", lambda: 2)
    out = tmp_path / "parallel-cpu.json"
    assert bench.main(["--device", "cpu", "--case", "mgda", "--samples", "128", "--repeats", "2",
                       "--out", str(out)]) == 0
    assert seen == [(1, "mgda", 128), (2, "mgda", 128)] * 2  # 1 and the core count, in every repeat
    record = json.loads(out.read_text())
    assert record["complete"] and record["case"] == "mgda" and record["cores"] == 2
    alone, two = record["rows"]
    assert (alone["jobs"], alone["threads_per_job"], alone["vs_one_run"]) == (1, 2, 1.0)
    assert alone["total_samples_per_s"] == 102.0  # the median of 101 and 103
    assert (two["jobs"], two["threads_per_job"], two["samples_per_s_each"]) == (2, 1, [80.0, 80.0])
    assert two["total_samples_per_s"] == 160.0
    assert two["vs_one_run"] == round((160 / 101 + 160 / 103) / 2, 3)  # per repeat, against that repeat's alone


def test_bench_parallel_runs_workers_at_once(tmp_path):
    bench = _load(REPO / "benchmarks" / "bench_parallel.py", "bench_parallel")
    from mmlab import RunConfig

    config = RunConfig.from_profile(profile="smoke", method="joint", epochs=2, train_size=64, val_size=32,
                                    test_size=32, grad_probe_every=0)
    each = bench.side_by_side(config, "cpu", 2, 2)  # two spawned workers, one thread each, real training
    assert len(each) == 2 and all(rate > 0 for rate in each)


def test_benchmark_page_names_each_records_datasets_and_says_when_one_was_cut_short(tmp_path, monkeypatch):
    build_book = _load(REPO / "scripts" / "build_book.py", "build_book")
    monkeypatch.setattr(build_book, "BENCHMARKS", tmp_path)
    row = {"case": "uniform", "samples_per_epoch": 4096, "batch_size": 64, "loop_samples_per_s": 1234.0,
           "bare_samples_per_s": 1300.0, "ratio": 0.949, "peak_memory_mb": 1000.0}
    common = {"device": "cuda (H200)", "torch_version": "2", "git_commit": "abc", "finished_at": "now"}
    (tmp_path / "cuda-H200.json").write_text(json.dumps({**common, "complete": False, "rows": [row]}))
    (tmp_path / "cuda-H200-cremad.json").write_text(json.dumps({
        **common, "complete": True, "rows": [{**row, "case": "cremad_shaped uniform", "dataset": "cremad_shaped"}]}))
    (tmp_path / "cuda-H200-agm.json").write_text(json.dumps({**common, "note": "beside two other runs", "rows": [row]}))
    page = build_book.benchmarks_page()
    # two CG-MNIST records of one device: each heading names its file; the note shows under its record
    assert "## cuda (H200): CG-MNIST (cuda-H200-agm)\n" in page
    assert "Noted with the measurement: beside two other runs" in page.split("(cuda-H200-agm)")[1].split("\n## ")[0]
    assert "## cuda (H200): CG-MNIST (cuda-H200)\n" in page and "## cuda (H200): CREMA-D-shaped\n" in page
    assert page.count("This record was cut short") == 1 and page.count("Noted with") == 1
    cgmnist_section = page.split("## cuda (H200): CG-MNIST (cuda-H200)")[1].split("\n## ")[0]
    assert "This record was cut short" in cgmnist_section  # under the record it is about


def test_latest_case_rows_takes_each_devices_latest_record_of_the_case(tmp_path):
    from mmlab.book import latest_case_rows

    def record(name, device, when, cases):
        (tmp_path / name).write_text(json.dumps({"device": device, "finished_at": when,
                                                 "rows": [{"case": c, "value": name} for c in cases]}))
    record("cpu.json", "cpu", "2026-01-01T00:00:00Z", ["agm", "joint"])
    record("cpu-agm.json", "cpu", "2026-02-01T00:00:00Z", ["agm"])
    record("cuda-H200.json", "cuda (H200)", "2026-03-01T00:00:00Z", ["joint"])
    record("cuda-graph-cuda-H200.json", "cuda (H200)", "2026-04-01T00:00:00Z", ["agm"])  # another kind
    latest = latest_case_rows(tmp_path, "agm")
    assert {d: row["value"] for d, (_, row) in latest.items()} == {"cpu": "cpu-agm.json"}
    assert latest_case_rows(tmp_path, "joint")["cpu"][1]["value"] == "cpu.json"


def test_benchmark_page_shows_the_captured_loop_check(tmp_path, monkeypatch):
    from mmlab.book import benchmark_records

    build_book = _load(REPO / "scripts" / "build_book.py", "build_book")
    monkeypatch.setattr(build_book, "BENCHMARKS", tmp_path)
    assert "## Does the captured loop train as the eager one?" in build_book.benchmarks_page()
    result = {"method": "mmpareto", "epochs": 3, "train_size": 8192, "replayed_steps": 380,
              "final_test_acc": {"test/acc": {"eager": 0.41234, "graph": 0.40567},
                                 "test/acc/gray": {"eager": 0.9, "graph": 0.9}},
              "train_s": {"eager": 4.04, "graph": 0.81},
              "checks": {"steps replayed": True, "final test accuracy within 0.05": True}}
    failing = {**result, "method": "ogm_ge",
               "checks": {"steps replayed": True, "final test accuracy within 0.05": False}}
    (tmp_path / "check-cuda-graph-cuda-H200.json").write_text(json.dumps({
        "device": "cuda (H200)", "git_commit": "0123456789abc", "git_dirty": False, "emulated": False,
        "passed": False, "methods": [result, failing]}))
    assert [p.name for p, _ in benchmark_records(tmp_path, "check")] == ["check-cuda-graph-cuda-H200.json"]
    assert benchmark_records(tmp_path, "graph") == []  # not the probe's record
    page = build_book.benchmarks_page()
    assert "| cuda (H200) | mmpareto | 3 | 8192 | 380 | 0.4123 | 0.4057 | 4.0 | 0.8 | passed | `0123456789` |" in page
    assert "| ogm_ge |" in page and "failed: final test accuracy within 0.05" in page


def test_build_book_refuses_a_bad_profile_from_the_environment_before_executing_anything(monkeypatch, capsys):
    build_book = _load(REPO / "scripts" / "build_book.py", "build_book")
    monkeypatch.setenv("MMLAB_PROFILE", "fast")
    monkeypatch.setattr(build_book, "execute", lambda *a, **k: pytest.fail("a chapter was executed"))
    with pytest.raises(SystemExit) as exit_:
        build_book.main(["--no-strict"])
    assert exit_.value.code == 2 and "MMLAB_PROFILE is 'fast'" in capsys.readouterr().err


def test_status_page_says_when_the_chapters_were_executed_with_other_profiles():
    build_book = _load(REPO / "scripts" / "build_book.py", "build_book")
    chapters = [Path("notebooks/01_a.ipynb"), Path("notebooks/02_b.ipynb")]
    same = {"01_a": {"profile": "smoke", "seconds": 1.0}, "02_b": {"profile": "smoke", "seconds": 2.0}}
    assert "- **Profile:** `smoke`\n" in build_book.status_page(chapters, same, "smoke")
    assert "`smoke` (the chapters' executed copies, reused" in build_book.status_page(chapters, same, "quick")
    mixed = {**same, "02_b": {"profile": "quick", "seconds": 2.0}}
    assert "mixed: the chapters were executed with `quick`, `smoke`" in build_book.status_page(chapters, mixed, "quick")
