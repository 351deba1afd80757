import subprocess
import sys

import pytest

from mmlab import RunConfig, UnknownNameError, resolve_profile
from mmlab.profiles import PROFILES
from mmlab.cli import main


def test_unknown_names_list_the_valid_ones(capsys):
    assert main(["train", "--method", "magic", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "Unknown method 'magic'" in err and "uniform" in err and "joint" in err
    assert main(["train", "--dataset", "imagenet"]) == 2
    assert "cgmnist" in capsys.readouterr().err
    assert main(["train", "--profile", "huge"]) == 2
    assert "smoke" in capsys.readouterr().err
    assert main(["train", "--method", "unimodal", "--modality", "smell", "--profile", "smoke"]) == 2
    assert "gray" in capsys.readouterr().err
    assert main(["train", "--method", "uniform", "-o", "alpha=1", "--profile", "smoke"]) == 2
    assert "alpha" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    ({"lr": "abc"}, "lr must be a finite number, got 'abc' (str)"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"epochs": 2.5}, "epochs must be a whole number, got 2.5 (float)"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"epochs": 0}, "epochs must be at least 1, got 0"),
    ({"train_size": 0}, "train_size must be at least 1"),
    ({"val_size": -1}, "val_size must be at least 2"),
    ({"seed": -1}, "seed and data_seed must be >= 0"),
    ({"weight_decay": -1e-4}, "momentum and weight_decay must be >= 0"),
    ({"measure_imbalance": "yes"}, "measure_imbalance must be true or false"),
])
def test_bad_config_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.from_profile(profile="smoke", method="joint", **overrides)


def test_config_accepts_numbers_of_any_real_type():
    import numpy as np

    config = RunConfig.from_profile(profile="smoke", method="joint", lr=1, train_size=np.int64(100), val_size=np.int64(2))
    assert config.lr == 1 and config.train_size == 100


def test_cli_refuses_zero_epochs_and_stack_before_anything_trains(results_dir, capsys):
    """``--epochs 0`` once fell back silently to the profile's epochs; a dry run checks --stack too."""
    assert main(["train", "--method", "joint", "--profile", "smoke", "--epochs", "0", "--no-progress"]) == 2
    assert "epochs must be at least 1, got 0" in capsys.readouterr().err
    for extra in (["--epochs", "0"], ["--stack", "0"], ["--set", "lr=abc"]):
        assert main(["sweep", "--method", "joint", "--profile", "smoke", "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert "epochs must be at least 1" in err and "stack must be a whole number >= 1" in err and "lr must be" in err
    assert not list(results_dir.rglob("*.json"))


def test_help_lists_datasets_methods_profiles():
    out = subprocess.run([sys.executable, "-m", "mmlab", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for word in ["cgmnist", "uniform", "joint", "unimodal", "smoke", "quick", "full"]:
        assert word in out


def test_cli_trains_and_stores(results_dir, capsys):
    assert main(["train", "--method", "joint", "--profile", "smoke", "--epochs", "1", "--no-progress",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test acc" in out and "record:" in out
    assert list(results_dir.glob("smoke/cgmnist/joint/seed0-*.json"))


def test_profile_resolution(monkeypatch):
    monkeypatch.delenv("MMLAB_PROFILE", raising=False)
    assert resolve_profile(None).name == "quick"
    monkeypatch.setenv("MMLAB_PROFILE", "smoke")
    assert resolve_profile(None).name == "smoke"
    assert resolve_profile("full").name == "full"
    with pytest.raises(UnknownNameError, match="Valid profiles: full, quick, sensitivity, smoke"):
        resolve_profile("fast")


def test_config_key_changes_with_settings_only():
    a = RunConfig.from_profile(method="uniform", profile="smoke")
    assert a.key == RunConfig.from_profile(method="uniform", profile="smoke").key
    assert a.key != RunConfig.from_profile(method="uniform", profile="smoke", seed=1).key
    assert a.key != RunConfig.from_profile(method="uniform", profile="smoke", dataset_options={"jitter_variance": 0.1}).key
    assert RunConfig.from_dict(a.to_dict()) == a
    with pytest.raises(TypeError, match="Unknown RunConfig field"):
        RunConfig.from_profile(profile="smoke", epoch=3)
    with pytest.raises(ValueError, match="batch_size"):
        RunConfig.from_profile(profile="smoke", batch_size=1)
    with pytest.raises(UnknownNameError, match="jitter_variance"):
        RunConfig.from_profile(profile="smoke", dataset_options={"jitter": 0.1})


def test_cli_asks_for_the_imbalance_measures(monkeypatch, results_dir, capsys):
    import mmlab.training

    seen = []

    def fake_load_or_run(config, **kwargs):
        seen.append(config)
        return {"final": {"test/acc": 0.5, "test/f1": 0.5, "epoch": 1}}

    monkeypatch.setattr(mmlab.training, "load_or_run", fake_load_or_run)
    assert main(["train", "--method", "greedy", "--profile", "smoke", "--measure-imbalance"]) == 0
    assert main(["train", "--method", "joint", "--profile", "smoke"]) == 0
    assert seen[0].measure_imbalance and seen[0].method == "greedy" and not seen[1].measure_imbalance


def test_sweep_plan_dry_run_finds_the_committed_records(capsys):
    from pathlib import Path

    from mmlab.cli import main

    results = Path(__file__).resolve().parent.parent / "results"
    assert main(["sweep", "--plan", "--profile", "full", "--dry-run", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    from mmlab.reproduction import reproduction_configs

    planned = {c.key for c in reproduction_configs("cgmnist", "full")}  # chapter 1's two-stage runs are not
    from mmlab.results import ResultsStore

    records = ResultsStore(results).records(profile="full", dataset="cgmnist")
    committed = sum(r["key"] in planned for r in records)  # the current protocol's (mmlab-2) plan
    assert f"36 runs: {committed} recorded, {36 - committed} to train" in out
    # the first protocol's plan, named on the command line, finds its 36 committed records
    assert main(["sweep", "--plan", "--profile", "full", "--dry-run", "--results", str(results),
                 "--data-option", "protocol=mmlab-1"]) == 0
    assert "36 runs: 36 recorded, 0 to train" in capsys.readouterr().out
    assert main(["sweep", "--plan", "--method", "joint", "--dry-run"]) == 2
    assert "leave out --method" in capsys.readouterr().err
    assert main(["sweep", "--dry-run"]) == 2
    assert "--plan" in capsys.readouterr().err


def test_preprocess_cremad_names_a_missing_folder(tmp_path, capsys):
    from mmlab.cli import main

    assert main(["preprocess-cremad", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_method_missing_its_modality_says_how_to_give_one():
    from mmlab.methods import build_method

    with pytest.raises(TypeError, match=r"needs the option \['modality'\] \(one of the modalities \['color', 'gray'\]: "
                                        r"modality='color'; .*`sweep --method unimodal:modality=color`"):
        build_method("unimodal", modalities=["color", "gray"])
    with pytest.raises(TypeError, match=r"needs the option \['modality'\]$"):  # no modalities known: no hint
        build_method("unimodal")


def test_every_method_has_a_title_for_prose():
    from mmlab.methods import METHOD_TITLES, METHODS, method_title

    assert set(METHOD_TITLES) == set(METHODS)
    assert method_title("ogm_ge") == "OGM-GE" and method_title("mgda") == "conventional Pareto (MGDA)"
    assert method_title("unimodal-audio") == "audio alone" and method_title("not-a-method") == "not-a-method"


def test_plural_counts_and_nouns():
    from mmlab.errors import plural

    assert [plural("run", n) for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert plural("modality") == "modalities" and plural("key") == "keys" and plural("ogm_ge option") == "ogm_ge options"


def test_a_bad_profile_from_the_environment_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("MMLAB_PROFILE", "Quick")
    with pytest.raises(UnknownNameError, match=r"Unknown profile 'Quick' \(from the environment variable "
                                               r"MMLAB_PROFILE\)\. Valid profiles: full, quick, sensitivity, smoke\."):
        resolve_profile()
    assert resolve_profile("smoke").name == "smoke"  # a notebook parameter wins over the variable
    assert main(["sweep", "--method", "joint", "--dry-run"]) == 2
    assert "MMLAB_PROFILE" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["val_size", "test_size"])
@pytest.mark.parametrize("size", [0, 1])
def test_an_evaluation_split_too_small_to_evaluate_is_refused_before_training(field, size):
    """An empty or one-sample validation/test split once crashed after a whole epoch, in torch.cat."""
    with pytest.raises(ValueError, match=f"{field} must be at least 2"):
        RunConfig.from_profile(profile="smoke", method="joint", **{field: size})


def test_the_smallest_evaluation_splits_train(tiny_config, tmp_path):
    from mmlab.training import train

    record = train(tiny_config("joint", val_size=2, test_size=2, epochs=1), checkpoint_dir=tmp_path, progress=False)
    assert record["final"]["test/acc"] in (0.0, 0.5, 1.0)


def test_a_dry_run_notes_a_device_this_machine_lacks(results_dir, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["sweep", "--method", "joint", "--profile", "smoke", "--dry-run"]
    assert main(argv + ["--device", "cuda"]) == 0  # a plan still: it says, and does not fail
    assert "the sweep itself would stop here: Device 'cuda' was asked for" in capsys.readouterr().err
    assert main(argv + ["--device", "cpu"]) == 0 and "would stop" not in capsys.readouterr().err


def test_a_cgmnist_knob_on_the_command_line_trains_names_its_protocol_and_evaluates_probes(results_dir, capsys):
    import json

    assert main(["train", "--method", "joint", "--profile", "smoke", "--epochs", "1", "--no-progress",
                 "--device", "cpu", "--data-option", "test_agreement=0.3",
                 "--data-option", "probe_agreements=[0.1,1.0]"]) == 0
    (path,) = results_dir.glob("smoke/cgmnist/joint/seed0-*.json")
    record = json.loads(path.read_text())
    assert record["data_protocol"] == "mmlab-2 with test_agreement=0.3"  # a knob departs from the current protocol
    assert record["config"]["dataset_options"] == {"probe_agreements": [0.1, 1.0], "protocol": "mmlab-2",
                                                   "test_agreement": 0.3}
    last = record["history"][-1]
    for name in ("test", "test@agreement=0.1", "test@agreement=1"):
        assert 0 <= last[f"{name}/acc"] <= 1 and f"{name}/acc" in record["final"]
    assert record["dataset"]["test@agreement=1"]["colour_label_agreement"] > 0.8  # own colours, bar the jitter


def test_a_bad_knob_value_on_the_command_line_names_the_valid_range(results_dir, capsys):
    assert main(["train", "--method", "joint", "--profile", "smoke", "--no-progress",
                 "--data-option", "test_agreement=1.3"]) == 2
    assert "test_agreement must lie in [0, 1], but it is 1.3" in capsys.readouterr().err
    assert main(["train", "--method", "joint", "--profile", "smoke", "--no-progress",
                 "--data-option", "protocol=mmlab-0"]) == 2
    assert "Unknown CG-MNIST protocol 'mmlab-0'. Valid CG-MNIST protocols: mmlab-1" in capsys.readouterr().err


def test_a_record_without_a_protocol_name_reads_as_the_first_protocol():
    from pathlib import Path

    from mmlab.results import ResultsStore, data_protocol, record_protocol

    committed = ResultsStore(Path(__file__).resolve().parent.parent / "results").records(profile="full", dataset="cgmnist")
    older = [r for r in committed if "data_protocol" not in r]  # made before protocols had names
    assert len(older) >= 36 and {record_protocol(r) for r in older} == {"mmlab-1"}
    assert all(record_protocol(r) == r["data_protocol"] for r in committed if "data_protocol" in r)
    assert data_protocol({"dataset": "cgmnist", "dataset_options": {"palette_spread": 0.5}}) == \
        "mmlab-1 with palette_spread=0.5"
    assert data_protocol({"dataset": "avdigits", "dataset_options": {}}) is None  # a dataset without protocols
    # the first protocol named is the same run as the unnamed one of a config built field by field (no probe
    # either): it finds the records made before the name
    full = {k: v for k, v in PROFILES["full"].settings_for("cgmnist").items() if k != "dataset_options"}
    unnamed = RunConfig(method="joint", profile="full", **full)
    assert unnamed.dataset_options == {} and data_protocol(unnamed.to_dict()) == "mmlab-1"
    named = RunConfig.from_profile(method="joint", profile="full",
                                   dataset_options={"protocol": "mmlab-1", "probe_agreements": []})
    assert named.key == unnamed.key and ResultsStore(committed_root := Path(__file__).resolve().parent.parent
                                                     / "results").load(named) is not None
    # a run made through a profile is the current protocol's, a different run
    current = RunConfig.from_profile(method="joint", profile="full")
    assert current.dataset_options["protocol"] == "mmlab-2" and current.key != unnamed.key
    assert data_protocol(current.to_dict()) == "mmlab-2"
    other = RunConfig.from_profile(method="joint", profile="full", dataset_options={"test_agreement": 0.3})
    assert other.key != unnamed.key and ResultsStore(committed_root).load(other) is None


def test_a_data_folder_named_on_the_command_line_that_does_not_exist_is_an_error(tmp_path, results_dir, capsys):
    assert main(["train", "--method", "joint", "--profile", "smoke", "--no-progress",
                 "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"The data folder {tmp_path / 'nowhere'} (given as --data, or root= in Python) does not exist" in err
    assert not list(results_dir.rglob("*.json"))  # nothing trained


def test_the_studies_of_chapter_1_are_sweeps_of_their_own(capsys):
    from pathlib import Path

    results = str(Path(__file__).resolve().parent.parent / "results")
    assert main(["sweep", "--study", "sensitivity", "--dry-run", "--results", results]) == 0
    assert "25 runs: 25 recorded, 0 to train" in capsys.readouterr().out  # chapter 1's figure is committed
    assert main(["sweep", "--study", "calibration", "--seed", "0", "--dry-run", "--results", results]) == 0
    assert "1 run: 1 recorded, 0 to train" in capsys.readouterr().out
    assert main(["sweep", "--study", "heldout", "--dry-run", "--results", results]) == 0
    assert capsys.readouterr().out.startswith("18 runs:")
    assert main(["sweep", "--study", "heldout", "--method", "joint", "--dry-run"]) == 2
    assert "--study trains the study's own runs" in capsys.readouterr().err


def test_chapter_6_s_records_are_a_sweep_of_their_own_with_the_ablations_told_apart(capsys, tmp_path):
    assert main(["sweep", "--study", "schedules", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("16 runs: 0 recorded, 16 to train")
    for label in ("udi-color", "udi-static", "udi-no_complementarity", "udi-no_consistency", "mla", "reconboost",
                  "relearning"):
        assert f" {label} " in out
    assert main(["sweep", "--study", "schedules", "--dataset", "avdigits", "--seed", "0", "--dry-run",
                 "--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("4 runs:")
    assert main(["sweep", "--study", "schedules", "--method", "joint", "--dry-run"]) == 2


def test_a_flag_option_reads_as_its_name_so_that_two_flags_off_do_not_share_a_label():
    from mmlab import RunConfig
    from mmlab.reproduction import Planned

    off = [RunConfig.from_profile(method="udi", method_options={k: False}).label for k in ("complementarity", "consistency")]
    assert off == ["udi-no_complementarity", "udi-no_consistency"]
    assert RunConfig.from_profile(method="mla", method_options={"projection": True}).label == "mla-projection"
    assert RunConfig.from_profile(method="ogm_ge", method_options={"alpha": 0.8}).label == "ogm_ge-0.8"
    assert Planned("udi", {"consistency": False}).label == off[1]
