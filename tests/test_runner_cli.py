"""A gradient-trained method through the one runner and the CLI, named by nothing but its registry line;
option parsing from signatures and YAML; MirroredStrategy; files saved before the contract changed."""
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adtf import detectors
from adtf.cli import fit_main
from adtf.errors import AdtfError
from detector_doubles import ConvAutoencoder

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(detectors.REGISTRY, "toy_autoencoder", ConvAutoencoder)
    return "toy_autoencoder"


def test_a_trained_toy_goes_through_the_runner_and_cli(toy_registered, tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "toy.yaml"
    config.write_text("method: toy_autoencoder\ndetector:\n  width: 4\nfit:\n  epochs: 2\ncompile:\n  learning_rate: 0.01\n")
    assert fit_main(["--config", str(config), "--data", "synthetic:grass", "--detector.image_size=[32,32]",
                     "--monitor-every", "1", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "toy_autoencoder" and metrics["preset"] == "fast"
    assert metrics["options"]["width"] == 4 and metrics["epochs"] == 2
    assert len(metrics["history"]["loss"]) == 2 and len(metrics["history"]["val_image_auroc"]) == 2
    # Trained methods calibrate on 20 % of the normal training images, held out of the fit.
    assert (metrics["n_train"], metrics["n_calibration"]) == (160, 40)
    assert len((out / "calibration_images.txt").read_text().splitlines()) == 40
    assert "held out of the fit" in (out / "report.md").read_text()
    assert not (out / "backup").exists()  # BackupAndRestore removes its checkpoint after a finished fit
    for name in ("model.keras", "saved_model/saved_model.pb", "roc.png", "command.txt"):
        assert (out / name).exists(), name
    said = capsys.readouterr().out  # which preset and schedule ran, said where the run ends
    assert "toy_autoencoder (fast preset, 2 epochs) on synthetic:grass" in said
    assert f"SavedModel (TF Serving): {out / 'saved_model'}" in said


def test_help_lists_the_methods_own_options_with_preset_defaults(toy_registered, capsys):
    with pytest.raises(SystemExit) as exit_:
        fit_main(["--method", "toy_autoencoder", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--detector.width" in text and "--compile.learning_rate" in text and "--fit.epochs" in text
    with pytest.raises(SystemExit):
        fit_main(["--method", "mon", "--help"])
    text = capsys.readouterr().out  # MoN: its offline preset's layer is the default shown
    assert "--detector.layer" in text and "block6d_add" in text and "--compile." not in text
    with pytest.raises(SystemExit):
        fit_main(["--help"])
    text = capsys.readouterr().out  # the main job: SimpleNet at its fast preset, on the embedded default
    text = " ".join(text.split())
    assert "preset of simplenet: paper, offline, fast (type: Optional[str], default: fast)" in text
    assert "default: synthetic:weave,size=256" in text
    # the epochs each preset trains, not the class default (it said 160 for SimpleNet, whose fast preset trains 16)
    assert "default: the preset's (paper 160, offline 40, fast 16)" in text


@pytest.mark.parametrize("argv, words", [
    (["--detector.no_such_option", "1"], "no_such_option"),
    (["--batch-size", "many"], "--batch-size: expected a positive integer, got many"),
    (["--method", "nope"], "unknown method"),
    (["--method", "SimpleNet"], "unknown method 'SimpleNet'; did you mean 'simplenet'?"),
    (["--method", "mon", "--preset", "fastest"], "unknown MoN preset"),
    (["--preset", "fastest"], "unknown SimpleNet preset"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
    # it trained nothing and exported an untrained discriminator; then jsonargparse's Union error named its types
    (["--fit.epochs", "-1"], "--fit.epochs: expected a non-negative integer, got -1"),
    (["--calibration-fraction", "x"], "--calibration-fraction: expected a number, got x"),
    (["--detector.hidden", "-3"], "SimpleNet's hidden must be at least 1, got -3"),  # was a traceback from Keras' Dense
    (["--detector.embed_dim", "0"], "SimpleNet's embed_dim must be at least 1, got 0"),  # was a ZeroDivisionError
    (["--method", "piade", "--detector.image_size", "[8, 8]"],  # was tf.image.ssim's failed assertion, after a fit
     "PIADE: image_size [8, 8] is smaller than SSIM's 11x11 window"),
    (["--detector.batch_size", "0"], "SimpleNet's batch_size must be at least 1, got 0"),  # was a ZeroDivisionError
    (["--detector.noise_std", "-1"], "SimpleNet's noise_std must be above 0, got -1"),  # these two trained silently
    (["--compile.adaptor_learning_rate=-1e-4"], "SimpleNet's adaptor_learning_rate must be above 0, got -0.0001"),
    (["--method", "piade", "--compile.learning_rate=-1e-3"], "PIADE's learning_rate must be above 0, got -0.001"),
    (["--method", "pyramid_ae", "--compile.learning_rate", "0"], "PyramidAE's learning_rate must be above 0, got 0"),
    (["--method", "flow_dictionary", "--detector.atoms", "0"], "FlowDictionary's atoms must be at least 1, got 0"),
    (["--detector.image_size", "[0, 0]"], "image_size is [height, width] in pixels"),
    (["--detector.image_size", "128"],  # was jsonargparse's Union error, its subtypes and Python class names
     '--detector.image_size: expected 2 integers in brackets, quoted in a shell (--detector.image_size "[256, 256]"), '
     'got 128'),
    (["--data", "folder:/tmp,holdout=abc"], "option holdout takes a float"),
    (["--method", "mon", "--data", "folder:/tmp", "--n-train", "3"], "--n-train: a folder dataset has no n_train"),
    (["--detector.imag", "3"], "unrecognized arguments: --detector.imag"),  # once read as --detector.image_size
    (["--seed", "-1"], "--seed: expected an integer from 0 to 4294967295, got -1"),  # numpy's ValueError, after loading
    (["--seed", str(2**32)], "--seed: expected an integer from 0 to 4294967295, got 4294967296"),
    (["--method", "mon", "--detector.image_size", "128"], "expected 2 integers in brackets, quoted in a shell "
                                                            '(--detector.image_size "[256, 256]"), got 128'),
    (["--detector.image_size", "[a, b]"], "expected 2 integers in brackets, quoted in a shell "
                                          "(--detector.image_size \"[256, 256]\"), got ['a', 'b']"),
])
def test_bad_options_stop_with_one_line(argv, words, capsys):
    assert fit_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # progress lines may come first (the data loads first)
    assert lines[-1].startswith("adtf-fit: error:") and words in lines[-1]
    assert not any(line.startswith(("Traceback", "adtf-fit: error:")) for line in lines[:-1])


def test_a_config_file_that_holds_no_options_is_named_so(tmp_path, capsys):
    """An empty --config file (or a YAML list) gave jsonargparse's "Unexpected config:", naming nothing."""
    for name, text, said in (("empty.yaml", "", "an empty file"), ("list.yaml", "- a\n- b\n", "- a - b")):
        (tmp_path / name).write_text(text)
        assert fit_main(["--config", str(tmp_path / name)]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            "adtf-fit: error: --config: expected a YAML mapping of options (method: mon, data: ..., detector: {...}), "
            f"got {said}")


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    import adtf.run

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(adtf.run, "fit_evaluate_export", interrupted)
    assert fit_main(["--quiet"]) == 130
    assert "adtf-fit: interrupted (the same command again resumes a trained method's fit" in capsys.readouterr().err


@pytest.mark.parametrize("level", [None, "3"])
def test_the_console_scripts_drop_tensorflows_start_up_lines(level):
    """TF 2.21 prints its INFO start-up lines (oneDNN, CUDA) whatever TF_CPP_MIN_LOG_LEVEL says: a user who set
    it to 3 to see fewer lines got them with every command."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    result = subprocess.run([sys.executable, "-c", "import sys; from adtf.cli import fit_main; "
                             "sys.exit(fit_main(['--help']))"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
    assert "absl::InitializeLog" not in result.stderr and ".cc:" not in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("error", ["tensorflow", "python"])
def test_running_out_of_memory_is_one_line_that_says_what_to_lower(error, monkeypatch, capsys):
    """An input size too large for the memory ended in TensorFlow's traceback ("OOM when allocating tensor ...")."""
    import tensorflow as tf

    from adtf import run
    from adtf.cli import fit_main

    def exhausted(*args, **kwargs):
        if error == "python":
            raise MemoryError()
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[12,3000,3000,3] "
                                                           "and type float on /job:localhost by allocator mklcpu")

    monkeypatch.setattr(run, "fit_evaluate_export", exhausted)
    assert fit_main(["--method", "mon", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adtf-fit: error: out of memory") and "--batch-size" in err and "Traceback" not in err
    assert ("(a tensor of shape [12,3000,3000,3])" in err) == (error == "tensorflow")
    assert "resumes a trained method's fit" in err


def test_the_calibration_images_are_counted_in_words_a_reader_cannot_misread():
    """MoN's "209 / 0 / 83" read as uncalibrated, cross-fitting's "400 / 400" as 800 images."""
    from adtf.cli import calibration_count

    assert calibration_count({"n_train": 160, "n_calibration": 40, "calibration": "40 normal training images held out"}) == "40"
    assert calibration_count({"n_train": 209, "n_calibration": None, "calibration": "the 209 normal images"}) == "the fitted"
    assert calibration_count({"n_train": 10, "n_calibration": 10,
                              "calibration": "all 10 normal training images, each scored by one of 5 detectors fitted "
                                             "without its fold (cross-fitting, seed 0)"}) == "the fitted, cross-fitted"
    assert calibration_count({"n_train": None, "n_calibration": None}) == "unknown"


def test_too_few_images_to_hold_out_for_calibration_is_a_clear_error():
    from adtf.run import calibration_split

    with pytest.raises(AdtfError, match="leaves none to fit on"):
        calibration_split(["a.png"], 0.2, seed=0)
    fit, calibration = calibration_split(["a.png", "b.png"], 0.2, seed=0)
    assert len(fit) == len(calibration) == 1  # round(0.4) = 0, but at least one image calibrates


def test_a_model_saved_by_adtf_0_1_fails_with_a_clear_message():
    with pytest.raises(AdtfError, match=r"mon_saved_by_adtf_0_1\.keras was saved by an earlier adtf, before working "
                                        r"points became a layer \(its config has no adtf_format\)"):
        detectors.load(FIXTURES / "mon_saved_by_adtf_0_1.keras")


def test_a_keras_file_that_holds_no_adtf_detector_is_named_as_such(tmp_path):
    """It was called 'saved by an earlier adtf', and told to fit it again."""
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(1)(inputs)).save(tmp_path / "plain.keras")
    with pytest.raises(AdtfError, match=r"plain\.keras: it holds a Keras Functional, not an adtf detector"):
        detectors.load(tmp_path / "plain.keras")


STRATEGY = textwrap.dedent("""
    import sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from detector_doubles import DOUBLES
    from adtf import data
    dataset = data.load("synthetic:grass", size=32, n_train=16, n_test_good=2, n_test_defect=1)
    train = data.pipeline(dataset.train, image_size=32, batch_size=8)  # with string paths, as adtf yields them
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name, cls in sorted(DOUBLES.items()):
        with strategy.scope():
            detector = cls(**cls.smoke_test_options)
        history = detector.fit(train, epochs=2, verbose=0)
        detector.calibrate(train, verbose=False)
        assert detector.distribute_strategy is strategy
        loss = history.history["loss"]
        assert len(loss) == 2 and np.isfinite(loss).all(), loss
        print(name, strategy.num_replicas_in_sync, loss)
    """)


def test_trains_under_mirrored_strategy_on_two_logical_cpus():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", STRATEGY, str(Path(__file__).parent)], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("toy_")]
    assert [line.split()[:2] for line in lines] == [["toy_autoencoder", "2"], ["toy_simplenet", "2"]]


def test_a_killed_fit_never_resumes_in_another_folder_of_the_same_name(toy_registered, tmp_path, monkeypatch):
    """Two folders called "train" given the same run folder: the second must not resume the first one's
    interrupted fit."""
    import functools

    import keras
    import numpy as np
    from PIL import Image

    from adtf.callbacks import ResumableBackup
    from adtf.run import fit_evaluate_export

    # A checkpoint at every epoch's end, so that the killed fit has saved one (a fit killed before its first save
    # has nothing to resume, and another command may start afresh in its folder).
    monkeypatch.setattr(ResumableBackup, "__init__", functools.partialmethod(ResumableBackup.__init__, every_seconds=0))

    class KillAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    rng = np.random.default_rng(0)
    for part in ("glass", "tiles"):
        (tmp_path / part / "train").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / part / "train" / f"{i}.png")
    kwargs = dict(detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 3}, export=False, verbose=False)
    with pytest.raises(KeyboardInterrupt):
        fit_evaluate_export(toy_registered, f"folder:{tmp_path / 'glass' / 'train'}", "fast", tmp_path / "run",
                            callbacks=[KillAfterOneEpoch()], **kwargs)
    with pytest.raises(AdtfError, match="fit_images"):
        fit_evaluate_export(toy_registered, f"folder:{tmp_path / 'tiles' / 'train'}", "fast", tmp_path / "run",
                            **kwargs)
    results = fit_evaluate_export(toy_registered, f"folder:{tmp_path / 'glass' / 'train'}", "fast", tmp_path / "run",
                                  **kwargs)  # the same command resumes
    assert results["epochs"] == 3


def test_bench_gives_two_specs_of_the_same_folder_name_two_run_folders(toy_registered, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from adtf.cli import bench_main

    rng = np.random.default_rng(0)
    for part in ("glass", "tiles"):
        (tmp_path / part / "train").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / part / "train" / f"{i}.png")
    glass, tiles = tmp_path / "glass" / "train", tmp_path / "tiles" / "train"
    specs = f'[folder:{glass}, folder:{tiles}, "folder:{glass},anomalous={tiles}"]'  # the third: the first's name
    assert bench_main(["--method", toy_registered, "--data", specs, "--detector.width", "4", "--detector.image_size=[32,32]",
                       "--fit.epochs", "1", "--out", str(tmp_path / "bench"), "--quiet"]) == 0
    # named as adtf-fit names them, numbered where two share a name; another method's bench gets other folders
    names = ["1-toy_autoencoder-folder-glass-train", "3-toy_autoencoder-folder-glass-train",
             "toy_autoencoder-folder-tiles-train"]
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted([*names, "bench.md"])
    assert all((tmp_path / "bench" / name / "metrics.json").exists() for name in names)
    table = capsys.readouterr().out  # normal images only: no AUROC, no speed, and the table still prints
    assert f"| toy_autoencoder | fast | folder:glass-train (1: `folder:{glass}`) | 0 | 32x32 | 4 / 1 / 0 | n/a |" in table
    assert f"| folder:glass-train (3: `folder:{glass},anomalous={tiles}`) | 0 | 32x32 | 4 / 1 / 5 |" in table
    # each run records its spec as given, as adtf-fit's do (a bench's were null)
    assert json.loads((tmp_path / "bench" / names[1] / "run.json").read_text())["spec"] == \
        f"folder:{glass},anomalous={tiles}"
    assert "| folder:tiles-train | 0 |" in table and (tmp_path / "bench" / "bench.md").read_text() in table
    assert "active working point TPR / TNR | best TPR / TNR (test-set threshold)" in table


def test_bench_over_seeds_gives_a_row_per_seed_and_their_mean_and_spread(toy_registered, tmp_path, capsys):
    """Small test sets need a spread, not one number: each seed is a fit with its own split and initialisation."""
    import json
    import statistics

    from adtf.cli import bench_main

    # One spec, not a list: jsonargparse refused `--data mtd:mtd` ("Expected a <class 'list'>")
    assert bench_main(["--method", toy_registered, "--data", "synthetic:grass", "--seeds", "[0, 1]", "--n-train", "12",
                       "--detector.width", "4", "--detector.image_size=[32,32]", "--fit.epochs", "1",
                       "--out", str(tmp_path / "bench"), "--quiet"]) == 0
    folders = sorted(p for p in (tmp_path / "bench").iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["toy_autoencoder-synthetic-grass-seed0", "toy_autoencoder-synthetic-grass-seed1"]
    metrics = [json.loads((p / "metrics.json").read_text()) for p in folders]
    assert [m["options"]["seed"] for m in metrics] == [0, 1]
    aurocs = [m["image_auroc"] for m in metrics]
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| toy_autoencoder |")]
    assert [row.split(" | ")[3] for row in rows] == ["0", "1", "**mean ± std of 2**"]
    assert f"| {statistics.mean(aurocs):.3f} ± {statistics.stdev(aurocs):.3f} |" in rows[2]


def test_bench_checks_every_spec_before_the_first_fit(toy_registered, tmp_path, capsys):
    """A typo in the last spec used to stop the bench after the earlier datasets' fits, with no table."""
    from adtf.cli import bench_main

    argv = ["--method", toy_registered, "--data", f"[synthetic:grass, folder:{tmp_path / 'missing'}]",
            "--out", str(tmp_path / "bench"), "--quiet"]
    assert bench_main(argv) == 2
    assert "missing" in capsys.readouterr().err and not (tmp_path / "bench").exists()
    # Two bad specs are both named in one try, not one per rerun.
    argv[3] = f"[folder:{tmp_path / 'first'}, synthetic:grass, folder:{tmp_path / 'second'}]"
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert "2 of the 3 datasets cannot be read" in err and "first" in err and "second" in err
    assert not (tmp_path / "bench").exists()


def test_a_failed_evaluation_keeps_the_fit_and_a_rerun_without_export_leaves_no_stale_saved_model(
        toy_registered, tmp_path, monkeypatch):
    """The fitted model is saved before the evaluation (which can fail: a plot, a disk), and the fit's backup kept
    until the run ends; and a SavedModel left by an earlier run must not sit beside a new model, where it would be
    deployed with the old weights."""
    import adtf.evaluate
    from adtf.run import fit_evaluate_export

    kwargs = dict(detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, verbose=False, n_train=20)
    out = tmp_path / "run"
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, command="adtf-fit ...", **kwargs)
    assert (out / "saved_model").is_dir() and (out / "command.txt").exists() and (out / "roc.png").exists()
    (out / "eval-other").mkdir()  # what adtf-eval wrote about the first model
    (out / "eval-other" / "metrics.json").write_text("{}")
    (out / "score-parts").mkdir()  # adtf-score's verdicts of the first model
    (out / "score-parts" / "score.json").write_text("{}")
    (out / "saved_model-fpr1_normal" / "assets.extra").mkdir(parents=True)  # adtf-export's, of the first model
    (out / "saved_model-fpr1_normal" / "assets.extra" / "adtf.json").write_text("{}")
    first = (out / "model.keras").stat().st_mtime_ns

    def failing_evaluate(*args, **kw):
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError):
        patch.setattr(adtf.evaluate, "evaluate", failing_evaluate)
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, export=False, seed=1, **kwargs)
    assert (out / "model.keras").stat().st_mtime_ns != first and (out / "backup").exists()
    # the first run's SavedModel and metrics no longer describe the model beside them
    assert not any((out / name).exists() for name in ("saved_model", "metrics.json", "report.md", "command.txt"))
    assert not list(out.glob("*.png")) and not (out / "eval-other").exists()  # plots and evaluations of the old model
    assert not (out / "saved_model-fpr1_normal").exists() and not (out / "score-parts").exists()
    # the failed run's claim on the folder is this process's: taken over; another live process's is not
    from adtf.errors import AdtfError
    from adtf.run import RUN_CLAIM

    assert int((out / RUN_CLAIM).read_text()) == os.getpid()
    (out / RUN_CLAIM).write_text(str(os.getppid()))
    with pytest.raises(AdtfError, match=f"another adtf-fit \\(process {os.getppid()}\\) is writing"):
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, export=False, seed=1, **kwargs)
    from adtf.cli import _model_path  # adtf-score, adtf-eval and adtf-export scored a model being replaced, unsaid

    with pytest.warns(UserWarning, match=f"another adtf-fit \\(process {os.getppid()}\\) is writing .*the previous fit's"):
        _model_path(out, tmp_path / "elsewhere")  # written elsewhere (--out): said
    for where, save_model in ((None, False), (out / "eval-mine", False), (tmp_path / "elsewhere", True)):
        with pytest.raises(AdtfError, match=f"another adtf-fit \\(process {os.getppid()}\\) is writing .*wait for it"):
            _model_path(out, where, save_model)  # into the run (the default --out, one inside it, --save-model)
    (out / RUN_CLAIM).write_text(str(os.getpid()))
    state = (out / "backup" / "state.json").read_text()  # a checkpoint cut short: named, with the way out
    (out / "backup" / "state.json").write_text(state[: len(state) // 2])
    with pytest.raises(AdtfError, match="checkpoint in .*backup cannot be read .*delete that folder"):
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, export=False, seed=1, **kwargs)
    (out / "backup" / "state.json").write_text(state)
    # the same command again resumes after the fit's last epoch (it refitted from scratch), and ends the backup
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, export=False, seed=1, **kwargs)
    assert not (out / RUN_CLAIM).exists()
    assert json.loads((out / "metrics.json").read_text())["resumed_at_epoch"] == 1 and not (out / "backup").exists()
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, command="adtf-fit ...", **kwargs)
    (out / "saved_model-fpr1_normal" / "assets.extra").mkdir(parents=True)  # an export removed before the fit used
    (out / "saved_model-fpr1_normal" / "assets.extra" / "adtf.json").write_text("{}")  # to turn --no-export off
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, export=False, seed=1, **kwargs)
    assert not (out / "saved_model").exists() and not (out / "command.txt").exists()
    assert (out / "metrics.json").exists()


def test_a_refit_stopped_before_its_end_never_leaves_a_folder_that_looks_finished(toy_registered, tmp_path,
                                                                                   monkeypatch):
    """run.json is written last, when the run is whole. A refit killed while saving its model once left the old
    run.json, metrics and SavedModel beside the new calibration list (which adtf-eval reads); one killed while
    exporting left a complete-looking metrics.json and report.md with no SavedModel."""
    from adtf.detectors.base import Detector
    from adtf.run import fit_evaluate_export

    kwargs = dict(detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, verbose=False, n_train=20)
    out = tmp_path / "run"
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, **kwargs)
    calibrated_on = (out / "calibration_images.txt").read_text()

    def killed(*args, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Detector, "save", killed)
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, seed=1, **kwargs)
    assert not any((out / name).exists() for name in ("run.json", "metrics.json", "report.md", "saved_model"))
    assert (out / "calibration_images.txt").read_text() == calibrated_on  # still the model's beside it
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Detector, "export", killed)
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, seed=1, **kwargs)
    assert (out / "calibration_images.txt").read_text() != calibrated_on  # the new model's, saved beside it
    assert not any((out / name).exists() for name in ("run.json", "metrics.json", "report.md", "scores.csv"))
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, seed=1, **kwargs)  # resumes, and ends
    assert all((out / name).exists() for name in ("run.json", "metrics.json", "report.md", "saved_model"))


def test_a_claim_whose_process_id_was_taken_by_a_later_process_is_taken_over(tmp_path):
    """A killed adtf-fit leaves its claim behind; its process id, reused by a process started since (common in
    containers), once kept every later run out of the folder."""
    from adtf.run import RUN_CLAIM, claim_run_folder

    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / RUN_CLAIM).write_text(str(later.pid))
        with pytest.raises(AdtfError, match=f"another adtf-fit \\(process {later.pid}\\)"):
            claim_run_folder(tmp_path)  # written after that process started: its holder
        os.utime(tmp_path / RUN_CLAIM, (time.time() - 3600,) * 2)  # written an hour before that process started
        assert claim_run_folder(tmp_path) == tmp_path / RUN_CLAIM
        assert int((tmp_path / RUN_CLAIM).read_text()) == os.getpid()
    finally:
        later.kill()
        later.wait()


def test_a_run_folder_on_a_file_system_without_hard_links_is_left_unclaimed(tmp_path, monkeypatch):
    """The claim is made with os.link (atomic: never two owners); a network share without hard links must not stop
    the fit (it ran unclaimed before the claim existed)."""
    from adtf.run import claim_run_folder

    def no_hard_links(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    assert claim_run_folder(tmp_path) is None and not list(tmp_path.iterdir())


def test_a_run_in_a_folder_holding_another_finished_run_says_so_before_its_fit(toy_registered, tmp_path, caplog):
    """The default run folder is named after the method and the dataset alone: another size, split or seed of the
    same data replaces the earlier run's outputs, which the user hears while the fit can still be stopped."""
    from adtf.run import fit_evaluate_export

    kwargs = dict(detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, verbose=False, n_train=20,
                  export=False)
    out = tmp_path / "run"
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, **kwargs)
    with caplog.at_level("INFO", logger="adtf"):
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, **kwargs)  # the same run again
        assert "finished run of these settings: it is fitted again" in caplog.text
        assert "other settings" not in caplog.text
        caplog.clear()
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, seed=1, **kwargs)
        assert "finished run with other settings (fit_images, options, test_images differ)" in caplog.text
        assert json.loads((out / "run.json").read_text())["options"]["seed"] == 1
        caplog.clear()  # --fit.* too: a paper run cut to 2 epochs was "a finished run of these settings" with 1
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", out, seed=1, **{**kwargs, "fit": {"epochs": 2}})
        assert "finished run with other settings (epochs differ)" in caplog.text
        # the same name and fit images, another test set: folder:ok and folder:ok,anomalous=ng share a run folder
        rng = np.random.default_rng(0)
        for name in [f"ok/{i}" for i in range(6)] + ["ng/0", "ng/1"]:
            (tmp_path / name).parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
        kwargs.pop("n_train")
        fit_evaluate_export(toy_registered, f"folder:{tmp_path / 'ok'}", "fast", out, **kwargs)
        caplog.clear()
        fit_evaluate_export(toy_registered, f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'}", "fast", out,
                            **kwargs)
        assert "finished run with other settings (test_images differ)" in caplog.text


def test_working_points_from_few_held_out_images_say_how_many_good_parts_they_pass(toy_registered, tmp_path,
                                                                                   monkeypatch):
    """The largest of N held-out normal scores passes about N/(N+1) of new normal images (weave, 10 images:
    2 held out kept 48-76 %): with few held out, the report must say what to expect and what to do."""
    from adtf.run import fit_evaluate_export

    results = fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "run", n_train=10,
                                  detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1},
                                  export=False, verbose=False)
    assert results["n_calibration"] == 2
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Few images to calibrate on" in report and "about 67% of new normal images" in report
    assert "(fpr1_normal is that score too" in report  # why two working points share one threshold
    assert "`--calibration-folds 5`" in report
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "four", n_train=4,
                        detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, export=False, verbose=False)
    assert "`--calibration-folds 4`" in (tmp_path / "four" / "report.md").read_text()  # 5 folds of 4 are refused
    # a method calibrated on its fitted images (MoN, paper 000): one image gave thresholds of 0 without a word
    monkeypatch.setattr(ConvAutoencoder, "calibration_fraction", 0.0)
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "own", n_train=3,
                        detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, export=False, verbose=False)
    report = (tmp_path / "own" / "report.md").read_text()
    assert "Few images to calibrate on" in report and "about 75% of new normal images" in report
    assert "since they are the fitted images" in report and "`--calibration-folds 3`" in report


def test_adtfs_own_graphs_do_not_warn_of_retracing(caplog):
    """adtf traces a graph per image size and per detector by design, and Keras a train function per detector it
    fits (cross-fitting's folds are detectors of their own); TensorFlow counted them together and warned of
    excessive retracing (SimpleNet, 6 folds: six paragraphs about nothing the user can change). Those warnings go;
    TensorFlow's other warnings, and its retracing warnings about the user's own functions, stay."""
    import logging

    import numpy as np
    import tensorflow as tf

    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    with caplog.at_level("WARNING", logger="tensorflow"):
        for _ in range(7):  # as cross-fitting's folds: a detector fitted and scoring, seven times
            detector = ConvAutoencoder(width=4, image_size=(32, 32))
            detector.compile()
            detector.fit(images, epochs=1, verbose=0)
            detector.infer(images)
        logging.getLogger("tensorflow").warning("something else")
        for _ in range(7):  # a user's function, made anew in a loop: TensorFlow's warning is for them
            tf.function(lambda x: x + 1)(tf.constant([1.0]))
    messages = [record.getMessage() for record in caplog.records if record.name == "tensorflow"]
    assert "something else" in messages
    ours = [message for message in messages if "retracing" in message and "test_adtfs_own_graphs" not in message]
    assert not ours, ours
    assert any("retracing" in message for message in messages), messages


def test_cross_fitted_calibration_scores_every_normal_image_out_of_fold_and_fits_on_all(toy_registered, tmp_path,
                                                                                          monkeypatch):
    """K-fold cross-fitting: the working points come from all N normal images, each scored by a detector fitted
    without it; the detector itself is fitted on all N; a rerun reuses the saved folds, other settings do not."""
    import numpy as np

    from adtf.run import fit_evaluate_export

    fitted_epochs, fit = [], ConvAutoencoder.fit

    def recording_fit(self, *args, epochs=None, **kwargs):
        fitted_epochs.append(epochs)
        return fit(self, *args, epochs=epochs, **kwargs)

    monkeypatch.setattr(ConvAutoencoder, "fit", recording_fit)

    kwargs = dict(n_train=10, detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, export=False,
                  verbose=False)
    results = fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "run", calibration_folds=3,
                                  **kwargs)
    assert results["n_train"] == 10 and results["n_calibration"] == 10
    report = (tmp_path / "run" / "report.md").read_text()
    assert "cross-fitting" in report and "about 91% of new normal images" in report  # 10 scores are still few
    folds = [line.split("\t")[0] for line in (tmp_path / "run" / "calibration_images.txt").read_text().splitlines()]
    assert sorted(folds) == ["0"] * 4 + ["1"] * 3 + ["2"] * 3
    assert not (tmp_path / "run" / "calibration_folds").exists()
    assert fitted_epochs == [1, 1, 1, 1]  # the main fit and the 3 folds, each with the epochs given (default: 2)

    from adtf.run import _cross_fitted_outputs  # the out-of-fold scores: one per image, the max is the threshold
    from adtf.detectors import REGISTRY
    from adtf import data
    dataset = data.load("synthetic:grass", n_train=10)
    cls = REGISTRY[toy_registered]
    options = {**cls.preset_options("fast"), **kwargs["detector"], "seed": 0}
    pipe = lambda samples: data.pipeline(samples, arrays=dataset.arrays, image_size=(32, 32), batch_size=16)
    outputs, _ = _cross_fitted_outputs(cls, options, None, dataset.train, 3, 0, pipe, tmp_path / "folds",
                                       {"epochs": 1}, False)
    assert outputs["score"].shape == (10,) and np.isfinite(outputs["score"]).all()
    saved = sorted(p.name for p in (tmp_path / "folds").glob("*.npz"))
    assert saved == [f"fold{j}_of_3_seed0.npz" for j in range(3)]
    again, _ = _cross_fitted_outputs(cls, options, None, dataset.train, 3, 0, pipe, tmp_path / "folds",
                                     {"epochs": 1}, False)
    np.testing.assert_array_equal(again["score"], outputs["score"])  # read back, not refitted
    other, _ = _cross_fitted_outputs(cls, {**options, "seed": 1}, None, dataset.train, 3, 0, pipe,
                                     tmp_path / "folds", {"epochs": 1}, False)
    assert not np.array_equal(other["score"], outputs["score"])  # other settings: folds fitted afresh


def test_cross_fitted_calibration_refuses_a_hold_out_too_and_more_folds_than_images(toy_registered, tmp_path):
    from adtf.errors import AdtfError
    from adtf.run import fit_evaluate_export

    kwargs = dict(n_train=10, detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, export=False,
                  verbose=False)
    with pytest.raises(AdtfError, match="either --calibration-fraction"):
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "a", calibration_folds=3,
                            calibration_fraction=0.2, **kwargs)
    with pytest.raises(AdtfError, match="between 2 and the 10"):
        fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "b", calibration_folds=11, **kwargs)


def test_a_trained_method_calibrated_on_its_own_fit_images_says_the_working_points_are_too_low(toy_registered,
                                                                                                  tmp_path):
    """With no image held out a trained detector is calibrated on the images it was fitted on, which training
    scores lower than new normal images (2-shot SimpleNet: TNR 0.00 on every seed): the report must say so."""
    from adtf.run import fit_evaluate_export

    results = fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "run",
                                  detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1},
                                  calibration_fraction=0.0, export=False, verbose=False)
    assert results["n_train"] == 200 and not results["n_calibration"]
    assert "working points are too low" in (tmp_path / "run" / "report.md").read_text()


def test_a_test_set_of_defects_only_is_said_before_the_fit(toy_registered, tmp_path, capsys):
    """The README's folder example had no good test images: image AUROC n/a, said only in the report after the fit."""
    import numpy as np
    from PIL import Image

    from adtf.run import configure_logging, fit_evaluate_export

    rng = np.random.default_rng(0)
    for folder, n in (("ok", 6), ("ng/dent", 2)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    configure_logging(False)  # warnings only, as --quiet
    fit_evaluate_export(toy_registered, f"folder:{tmp_path / 'ok'},anomalous={tmp_path / 'ng'}", out=tmp_path / "run",
                        detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, export=False, verbose=False)
    assert "every test image is defective" in capsys.readouterr().err


def test_an_unusable_run_folder_is_refused_before_any_work(tmp_path, caplog, monkeypatch):
    from adtf.data import load
    from adtf.run import _check_backup, check_output_folder

    (tmp_path / "afile").write_text("x")
    with pytest.raises(AdtfError, match="afile is a file; a run writes a folder"):
        check_output_folder(tmp_path / "afile")
    with pytest.raises(AdtfError, match="cannot write there"):
        check_output_folder(tmp_path / "afile" / "run")
    from test_data_sources import write_image

    for i in range(2):
        write_image(tmp_path / "parts" / f"{i}.png", seed=i)
    with pytest.raises(AdtfError, match="in a folder the dataset's images are read from"):  # its plots would be read
        check_output_folder(tmp_path / "parts" / "run", load(f"folder:{tmp_path / 'parts'}"))
    check_output_folder(tmp_path / "runs" / "parts", load(f"folder:{tmp_path / 'parts'}"))
    # A fit killed before its first save left only its settings: another command may start afresh there.
    _check_backup(tmp_path / "backup", {"seed": 0})
    monkeypatch.setattr(logging.getLogger("adtf"), "propagate", True)  # the CLI's tests may have turned it off
    with caplog.at_level(logging.INFO, logger="adtf"):
        _check_backup(tmp_path / "backup", {"seed": 1})
    assert "stopped before its first checkpoint: fitting from epoch 1" in caplog.text  # not a silent restart
    (tmp_path / "backup" / "state.json").write_text("{}")
    with pytest.raises(AdtfError, match="holds the backup of an interrupted fit with other settings"):
        _check_backup(tmp_path / "backup", {"seed": 2})


def test_options_that_differ_from_the_preset_named_are_said(toy_registered, tmp_path, caplog):
    """`--print_config` writes the preset's values, so `--config fast.yaml --preset offline` trained fast's 16 epochs
    with no word; the options that differ from the preset named are logged now."""
    from adtf.detectors.simplenet import LITE2_TAPS, SimpleNet
    from adtf.run import options_given

    fast = SimpleNet.preset_options("fast")
    written = {**fast, "layers": list(LITE2_TAPS)}  # a list, as YAML gives it back
    assert options_given(SimpleNet, "fast", written) == {}
    assert options_given(SimpleNet, "offline", written) == {"epochs": (16, 40), "min_steps": (320, 800)}
    from adtf.run import fit_evaluate_export

    with caplog.at_level("INFO", logger="adtf"):  # fit_main --quiet would set the level to WARNING
        fit_evaluate_export(toy_registered, "synthetic:grass,size=32,n_train=10", "fast", tmp_path / "run",
                            detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, verbose=False,
                            export=False)
    assert "options that differ from the fast preset: width 4 (not 8)" in caplog.text
    assert "image_size" not in caplog.text.split("differ from the fast preset")[1].splitlines()[0]


def test_a_config_that_is_no_yaml_is_named(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("method: mon\n  bad: [\n")
    assert fit_main(["--config", str(config)]) == 2
    assert f"--config {config}: not valid YAML (mapping values are not allowed" in capsys.readouterr().err
    # Nested aliases ("billion laughs"): 300 bytes grew past 4.6 GB in the option parser, a flag given or not
    config.write_text("a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
                      + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) + "method: mon\n")
    assert fit_main(["--config", str(config), "--method", "mon"]) == 2
    assert (f"--config {config}: not valid YAML (an alias (*name), which adtf's configs do not take"
            in capsys.readouterr().err)
    assert fit_main(["--method", "mon", "--detector", str(config)]) == 2  # a section's own file, read by jsonargparse
    assert "an alias (*name), which adtf's configs do not take" in capsys.readouterr().err
    # a typed option's value, which jsonargparse reads again with its YAML loader class (a review's 537,469-character
    # message from a 6-level bomb quoted in a config): refused as it is composed, never expanded
    bomb = "{a0: &a0 [x, x, x, x, x], " + ", ".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 5)}]" for i in range(1, 7)) + "}"
    for option in ("--calibration-fraction", "--detector.image_size", "--n-train"):
        assert fit_main(["--method", "mon", option, bomb]) == 2
        assert len(capsys.readouterr().err) < 1000
    from adtf.cli import _parse

    assert _parse("adtf-fit", ["--method", "mon", "--out", "*x"]).out == "*x"  # a value that merely starts with *


@pytest.mark.parametrize("section, said", [("detector: 3", "'detector' holds 3, where it must be a section"),
                                           ("fit: [1]", "'fit' holds [1], where it must be a section"),
                                           ("detector:", "'detector:' is empty: remove that line")])
def test_a_config_section_that_is_no_section_is_named(tmp_path, capsys, section, said):
    """jsonargparse lets a YAML scalar replace a whole section: the runner met it as an AttributeError traceback."""
    config = tmp_path / "run.yaml"
    config.write_text(f"method: mon\n{section}\n")
    assert fit_main(["--config", str(config)]) == 2
    assert said in capsys.readouterr().err


def test_no_normal_test_image_is_said_with_advice_for_the_spec_given(toy_registered, tmp_path, caplog, monkeypatch):
    """A one-class set whose normal class has one image tests on defects alone; the advice once named only the
    options of a folder: spec."""
    import logging

    from adtf.run import fit_evaluate_export

    rng = np.random.default_rng(0)
    for name in ("a/0", "b/0", "b/1"):
        (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "set" / f"{name}.png")
    monkeypatch.setattr(logging.getLogger("adtf"), "propagate", True)
    with caplog.at_level("WARNING", logger="adtf"):
        results = fit_evaluate_export(toy_registered, f"classes:{tmp_path / 'set'}:a", "fast", tmp_path / "run",
                                      detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1},
                                      calibration_fraction=0.0, verbose=False, export=False)
    assert "every test image is defective" in caplog.text and "left over by `train_fraction`" in caplog.text
    assert results["image_auroc"] is None and "left over by `train_fraction`" in (tmp_path / "run" / "report.md").read_text()


def test_a_fit_stopped_with_sigterm_removes_its_feature_cache(tmp_path):
    """`kill` and `timeout` send SIGTERM, which skipped every clean-up: a DAGM class's 1.2 GB cache stayed behind."""
    import signal
    import subprocess
    import sys
    import time

    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / "adtf-simplenet-left"  # what a process long gone left: a lock nobody holds
    stale.mkdir()
    (stale / ".lock").touch()
    env = dict(os.environ, ADTF_CACHE_DIR=str(cache), TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from adtf.cli import fit_main; sys.exit(fit_main())", "--method",
         "simplenet", "--preset", "fast", "--data", "synthetic:grass", "--n-train", "12", "--detector.image_size",
         "[64, 64]", "--fit.epochs", "100000", "--no-export", "--out", str(tmp_path / "run")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not list(cache.glob("adtf-simplenet-*/*.npy")):
        time.sleep(0.2)  # until the cache is written
    time.sleep(3)  # and training on it
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert list(cache.glob("adtf-simplenet-*")) and not stale.exists()  # the dead process's cache went first
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "terminated (the same command again resumes a trained method's fit" in err
    assert not list(cache.iterdir())


def test_a_fit_whose_sigterm_exception_a_finalizer_dropped_stops_at_the_next_epoch_end(images_for_toy):
    """The SIGTERM test above failed now and then under load: the fit went on for minutes after the signal. Python
    runs the handler wherever the main thread is, a finalizer too (a dataset iterator's __del__ ends every epoch),
    and drops an exception raised there (the likeliest cause; its stderr was not caught); the handler's flag ends the
    fit at the next epoch's end instead."""
    import keras

    from adtf.errors import TERMINATED

    class DroppedSigterm(keras.callbacks.Callback):  # the handler ran, its SystemExit was lost
        def on_epoch_begin(self, epoch, logs=None):
            TERMINATED.set()

    model = ConvAutoencoder(image_size=(32, 32), width=4)
    epochs_run = []
    try:
        with pytest.raises(SystemExit) as stopped:
            model.fit(images_for_toy, epochs=5, verbose=0, callbacks=[
                DroppedSigterm(), keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs_run.append(e))])
    finally:
        TERMINATED.clear()
    assert stopped.value.code == 143 and epochs_run == []  # the first epoch's end: before the callbacks after it


def test_a_ctrl_c_a_finalizer_dropped_leaves_the_run_unfinished(toy_registered, tmp_path, monkeypatch):
    """A Ctrl-C during the evaluation landed in tqdm's __del__ once in ten tries, was printed and dropped, and the
    run went on to write run.json (the mark of a whole run) and exit 0: the console scripts' handler remembers it."""
    import adtf.evaluate
    from adtf.errors import INTERRUPTED
    from adtf.run import fit_evaluate_export

    evaluate = adtf.evaluate.evaluate

    def dropped_ctrl_c(*args, **kwargs):
        results = evaluate(*args, **kwargs)
        INTERRUPTED.set()  # the handler ran, its KeyboardInterrupt was lost
        return results

    monkeypatch.setattr(adtf.evaluate, "evaluate", dropped_ctrl_c)  # the runner imports it when it runs
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "run", n_train=4,
                                detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, export=False,
                                verbose=False)
    finally:
        INTERRUPTED.clear()
    assert (tmp_path / "run" / "model.keras").exists() and not (tmp_path / "run" / "run.json").exists()


def test_the_console_scripts_signal_handlers_leave_nothing_behind_and_respect_an_ignored_ctrl_c():
    """A Ctrl-C flag left set after adtf-fit returned stopped every later fit in the same process (a notebook) at
    its first epoch; and `adtf-fit &` in a script, whose Ctrl-C the shell ignores, was stopped by it."""
    import signal

    from adtf.cli import _exit_cleanly_on_sigterm
    from adtf.errors import INTERRUPTED, TERMINATED

    original = signal.getsignal(signal.SIGINT)  # a test runner's worker may have its own
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        restore = _exit_cleanly_on_sigterm("adtf-fit")
        installed = signal.getsignal(signal.SIGINT)
        INTERRUPTED.set(), TERMINATED.set()  # as a handled (or dropped) signal leaves them
        restore()
        assert installed is not before[0] and not INTERRUPTED.is_set() and not TERMINATED.is_set()
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # `adtf-fit &` in a script
        restore = _exit_cleanly_on_sigterm("adtf-fit")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        restore()
    finally:
        signal.signal(signal.SIGINT, original)


def test_scored_masks_are_kept_as_booleans_and_calibration_keeps_none(images_for_toy, monkeypatch):
    """Masks were kept as float32, and calibration kept a mask of zeros for every normal image (0.6 GB over 3,000
    images, a review measured): a quarter of that, and nothing where no pixel metric reads them."""
    import tensorflow as tf

    from adtf.detectors.base import Detector

    model = ConvAutoencoder(image_size=(32, 32), width=4)
    model.fit(images_for_toy, epochs=1, verbose=0)
    masks = (images_for_toy[..., :1] > 0.5).astype("float32")
    labelled = tf.data.Dataset.from_tensor_slices((images_for_toy, np.ones(8, "int32"), masks)).batch(4)
    scored = model.score_dataset(labelled, verbose=False)
    assert scored["mask"].dtype == bool and np.array_equal(scored["mask"], masks > 0.5)
    kept = []
    score_dataset = Detector.score_dataset
    monkeypatch.setattr(Detector, "score_dataset", lambda self, ds, **kw: kept.append(kw.get("keep_masks", True)) or
                        score_dataset(self, ds, **kw))
    model.calibrate(labelled, verbose=False)
    assert kept == [False]


@pytest.fixture
def images_for_toy():
    return np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")


def test_a_resize_that_throws_pixels_away_is_said_in_the_report_too(toy_registered, tmp_path):
    """It was said on the console only: a report read later said "224x224 input" and nothing of the 2.3x shrink."""
    from adtf import data
    from adtf.run import fit_evaluate_export, warn_about_resizing

    dataset = data.load("synthetic:grass", n_train=12)  # 128 px
    kwargs = dict(detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 1}, verbose=False, export=False)
    fit_evaluate_export(toy_registered, dataset, "fast", tmp_path / "run", **kwargs)
    assert "are shrunk 4.0x to 32x32" in (tmp_path / "run" / "report.md").read_text()
    assert not dataset.notes  # the run's own: another run of this dataset (a bench's next preset) may not shrink it
    notes = []
    warn_about_resizing([512] * 5, [512] * 5, (224, 224), notes=notes)
    warn_about_resizing([512] * 5, [512] * 5, (224, 224), notes=notes)  # said once
    assert len(notes) == 1 and notes[0].startswith("the images (512x512, height x width, the median) are shrunk 2.3x to 224x224")


def test_a_training_image_far_from_the_others_scale_is_said():
    """An 8x8 thumbnail among 150-px photos was resized 20x with no word, and its score set max_normal."""
    from adtf.run import warn_about_resizing

    notes = []
    warn_about_resizing([150] * 24 + [8], [150] * 24 + [8], (160, 160), notes=notes)
    assert notes == ["1 of 25 training images are at another scale than the rest (e.g. one of 8x8 among a median of "
                     "150x150, height x width): resized to 160x160 with the others, such a part looks unlike them and its score moves "
                     "the working points; leave it out or crop it to the others' scale"]
    notes = []  # MTD's tiles, 103-632 px wide and 222-403 px tall: one kind of part at many sizes, said nothing of
    warn_about_resizing([222, 270, 403, 300, 260] * 5, [103, 326, 632, 330, 300] * 5, (256, 320), notes=notes)
    assert not any("another scale" in note for note in notes)


def test_a_feature_cache_sweep_spares_a_live_cache_and_takes_a_dead_one(tmp_path):
    from adtf.detectors.simplenet import FeatureCache

    live = FeatureCache.create(tmp_path)
    dead = tmp_path / "adtf-simplenet-dead"
    dead.mkdir()
    (dead / ".lock").touch()  # its process ended: nobody holds the lock
    other = FeatureCache.create(tmp_path)
    assert Path(live.folder).is_dir() and not dead.exists()
    live.remove(), other.remove()
    assert not list(tmp_path.iterdir())


def test_a_feature_cache_that_cannot_be_written_says_where_and_how_to_move_it(tmp_path, monkeypatch):
    """A full disk under a memory-mapped chunk killed the process with SIGBUS ("Bus error", no word from adtf); a
    chunk is now written through the file, whose failure is named with ADTF_CACHE_DIR, the way out."""
    import errno

    from adtf.detectors import simplenet
    from adtf.errors import AdtfError

    with pytest.raises(AdtfError, match=r"nowhere: no such folder for SimpleNet's feature cache \(ADTF_CACHE_DIR"):
        simplenet.FeatureCache.create(tmp_path / "nowhere")
    cache = simplenet.FeatureCache.create(tmp_path)

    def full(path, array):
        Path(path).write_bytes(b"\x93NUMPY")  # a part of it, as a full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(simplenet.np, "save", full)
    with pytest.raises(AdtfError, match=r"could not be written to .*adtf-simplenet-.*No space left on device; \d+ "
                                        r"MiB free there\): it takes 0\.4 MiB per training image; set ADTF_CACHE_DIR"):
        cache.append(np.zeros((64, 16, 16, 768), np.float16))
    cache.remove()
    assert not list(tmp_path.iterdir())


def test_a_home_adtf_cannot_write_to_names_adtf_home(tmp_path, monkeypatch):
    from adtf.errors import AdtfError
    from adtf.paths import adtf_home

    (tmp_path / "file").touch()
    monkeypatch.setenv("ADTF_HOME", str(tmp_path / "file" / "adtf"))  # under a file: as a read-only HOME, unmakeable
    with pytest.raises(AdtfError, match="cache folder .*file/adtf cannot be made .*set ADTF_HOME to a writable folder"):
        adtf_home()


def test_a_long_schedule_shows_one_bar_over_its_epochs(toy_registered, tmp_path, capfd, monkeypatch):
    """Keras prints two lines an epoch: a 2-image SimpleNet fit, raised to 320 one-step epochs, printed 640. The
    detector's own passes (statistics, a feature cache) keep their bars, and cross-fitted folds get theirs."""
    import adtf.run
    from adtf.run import fit_evaluate_export

    shown, statistics = [], ConvAutoencoder.fit_statistics
    monkeypatch.setattr(ConvAutoencoder, "fit_statistics", lambda self, x, verbose=True: (
        shown.append(verbose), statistics(self, x, verbose=verbose))[1])
    monkeypatch.setattr(adtf.run, "ONE_BAR_BEYOND", 3)  # the rule, at a few epochs (41 took 40 s of the suite)
    epochs = adtf.run.ONE_BAR_BEYOND + 1
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "run", n_train=4, calibration_folds=2,
                        detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": epochs}, export=False)
    out, err = capfd.readouterr()
    assert "Epoch 1/" not in out + err
    # the main fit and its two folds
    assert err.count(f"training: 100%|██████████| {epochs}/{epochs}") == 3
    assert shown == [True, True, True]
    fit_evaluate_export(toy_registered, "synthetic:grass", "fast", tmp_path / "short", n_train=4,
                        calibration_fraction=0, detector={"width": 4, "image_size": [32, 32]}, fit={"epochs": 2},
                        export=False)
    out, err = capfd.readouterr()
    assert "Epoch 2/2" in out and "training: " not in err  # a short schedule keeps Keras' own lines


def test_the_runner_prints_its_lines_from_python_for_the_call_only(monkeypatch, capsys):
    """Nobody set up logging (a notebook): the runner's lines print as adtf-fit's do, and nothing is left behind
    that would shadow the caller's own setup later (or print a later quiet call's lines)."""
    import adtf.run as run

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's own capture handlers aside
    monkeypatch.setattr(run.log, "handlers", [])

    @run._prints_progress_lines
    def runner(*, verbose=True):
        run.log.info("[1/5] loading")

    runner()
    assert "[1/5] loading" in capsys.readouterr().err
    assert run.log.handlers == [] and run.log.propagate and run.log.level == logging.NOTSET
    runner(verbose=False)
    assert "[1/5] loading" not in capsys.readouterr().err
