"""adtf-fit end to end on tiny synthetic data, and SavedModel parity in a fresh process."""
import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from adtf.cli import bench_main, eval_main, export_main, fit_main, score_main

SIZE = 64
REQUIRED = ("method", "dataset", "image_auroc", "pixel_auroc", "aupro", "best_tpr", "best_tnr", "working_points",
            "n_train", "n_test", "ms_per_image", "peak_rss_mb")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = out / "config.yaml"
    config.write_text(f"method: mon\nbatch-size: 8\ndetector:\n  layer: block4c_add\n  image_size: [{SIZE}, {SIZE}]\n")
    code = fit_main(["--data", "synthetic:grass", "--config", str(config), "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_fit_writes_metrics_report_plots_model_and_savedmodel(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in metrics, key
    assert metrics["method"] == "mon" and metrics["dataset"].startswith("synthetic")
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["aupro"] <= 1.0
    assert set(metrics["working_points"]) == {f"threshold{i}" for i in range(1, 7)}
    for point in metrics["working_points"].values():
        assert point["auc"] == pytest.approx((point["tpr"] + point["tnr"]) / 2)
    for name in ("report.md", "roc.png", "scores.png", "scatter.png", "heatmaps_most_anomalous.png", "model.keras",
                 "heatmaps_good_scored_highest.png", "heatmaps_defective_scored_lowest.png",  # false alarms, misses
                 "saved_model/saved_model.pb", "saved_model/assets.extra/adtf.json"):
        assert (run_dir / name).exists(), name
    assert "threshold3 (active)" in (run_dir / "report.md").read_text()
    # which preset and weights: a cut-down or random-weight run must not read as the method's
    assert re.search(r"Setup: `\w+` preset; backbone \w+ with ImageNet weights\.", (run_dir / "report.md").read_text())
    rows = (run_dir / "scores.csv").read_text().splitlines()
    assert rows[0] == "path,label,defect,score,d_max,d_mean,anomalous (threshold3),invalid"
    assert len(rows) == 1 + metrics["n_test"] and "scores.csv" in (run_dir / "report.md").read_text()
    flagged = [row.split(",") for row in rows[1:]]
    tpr = np.mean([int(r[-2]) for r in flagged if r[1] == "1"])  # the verdicts are those the working point counts
    assert tpr == pytest.approx(metrics["working_points"]["threshold3"]["tpr"])


PARITY = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    assert "adtf" not in sys.modules
    served = tf.saved_model.load(sys.argv[1])
    images = np.load(sys.argv[2])
    out = served.signatures["serving_default"](images=tf.constant(images))
    files = [open(p, "rb").read() for p in sys.argv[3:]]
    from_bytes = served.signatures["serve_image_bytes"](image_bytes=tf.constant(files, tf.string)) if files else {}
    print(json.dumps({"images": {k: np.asarray(v).astype(float).tolist() for k, v in out.items()},
                      "bytes": {k: np.asarray(v).astype(float).tolist() for k, v in from_bytes.items()}}))
    """)


def _served(saved_model, images, files, tmp_path):
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run([sys.executable, "-c", PARITY, str(saved_model), str(tmp_path / "images.npy"), *files],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_savedmodel_matches_keras_in_a_fresh_process(run_dir, tmp_path):
    from adtf import data
    from adtf.detectors import load

    detector = load(run_dir / "model.keras")
    dataset = data.load("synthetic:grass")
    samples = dataset.test[-3:]
    images = np.concatenate([np.asarray(b[0]) for b in data.pipeline(samples, image_size=(SIZE, SIZE), batch_size=3)])
    expected = {k: np.asarray(v) for k, v in detector(images).items()}
    served = _served(run_dir / "saved_model", images, [s.path for s in samples], tmp_path)
    assert set(served["images"]) >= {"score", "d_mean", "d_max", "anomaly_map", "decisions", "anomalous"}
    for key, value in expected.items():
        np.testing.assert_allclose(np.array(served["images"][key]), value.astype(float), rtol=1e-4, atol=1e-5)
    # The bytes signature decodes and resizes with adtf.data's own functions: same scores.
    np.testing.assert_allclose(np.array(served["bytes"]["d_max"]), expected["d_max"], rtol=1e-4)


def test_served_files_that_are_no_images_are_invalid_and_anomalous_and_the_rest_of_the_batch_is_scored(run_dir,
                                                                                                        tmp_path):
    """A failed capture (an empty string, a file cut short) or another payload in a batch of files failed the whole
    request."""
    from adtf import data

    samples = data.load("synthetic:grass").test[-2:]
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "page.png").write_bytes(b"<html>502 Bad Gateway</html>")
    whole = open(samples[0].path, "rb").read()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
    files = [samples[0].path, str(tmp_path / "empty.png"), str(tmp_path / "page.png"), str(tmp_path / "cut.png"),
             samples[1].path]
    served = _served(run_dir / "saved_model", np.zeros((0, SIZE, SIZE, 3), np.float32), files, tmp_path)
    assert served["bytes"]["invalid"] == [0, 1, 1, 1, 0] and served["bytes"]["anomalous"][1:4] == [1, 1, 1]
    assert np.isfinite(np.array(served["bytes"]["d_max"])[[0, 4]]).all()
    assert served["bytes"]["score"][1:4] == [np.inf, np.inf, np.inf]
    alone = _served(run_dir / "saved_model", np.zeros((0, SIZE, SIZE, 3), np.float32), files[::4], tmp_path)
    np.testing.assert_allclose(alone["bytes"]["d_max"], np.array(served["bytes"]["d_max"])[[0, 4]], rtol=1e-5)
    assert served["images"]["score"] == []  # an empty batch gives empty outputs


def test_served_images_of_the_wrong_size_are_refused_with_the_expected_shape(run_dir):
    script = textwrap.dedent("""
        import sys, tensorflow as tf
        served = tf.saved_model.load(sys.argv[1])
        try:
            served.signatures["serving_default"](images=tf.zeros([1, 40, 48, 3]))
        except tf.errors.InvalidArgumentError as error:
            print(error.message)
        """)
    result = subprocess.run([sys.executable, "-c", script, str(run_dir / "saved_model")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"serving_default takes float32 images [B, {SIZE}, {SIZE}, 3]" in result.stdout


def test_export_moves_the_working_point_without_refitting(run_dir, tmp_path):
    out = tmp_path / "exported"
    assert export_main([str(run_dir), "--threshold", "-1", "--score", "d_mean", "--out", str(out)]) == 0
    meta = json.loads((out / "assets.extra" / "adtf.json").read_text())
    assert meta["threshold"] == -1.0 and meta["working_point"].startswith("explicit")
    images = np.zeros((2, SIZE, SIZE, 3), np.float32)
    served = _served(out, images, [], tmp_path)
    assert all(served["images"]["anomalous"])
    assert export_main([str(run_dir), "--working-point", "nope", "--out", str(out)]) == 2
    assert export_main([str(run_dir), "--threshold", "nan", "--out", str(out)]) == 2  # would flag no image
    assert export_main([str(run_dir), "--threshold", "inf", "--out", str(out)]) == 2  # nor would this
    # --score alone moved nothing and reported success
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(run_dir), "--score", "d_mean", "--out", str(tmp_path / "not_written")])
    assert exit_info.value.code == 2 and not (tmp_path / "not_written").exists()


def test_export_says_what_its_threshold_does_to_the_run_s_test_images(run_dir, tmp_path, capsys):
    """Someone moving a threshold needs to see the good parts it fails and the defects it passes."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    active = metrics["working_points"][metrics["active_working_point"]]
    assert export_main([str(run_dir), "--working-point", metrics["active_working_point"], "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    assert f"TNR {active['tnr']:.3f}" in said and f"TPR {active['tpr']:.3f}" in said  # as the evaluation measured
    assert export_main([str(run_dir), "--threshold=-1e9", "--score", "d_mean", "--out", str(tmp_path / "b")]) == 0
    with open(run_dir / "scores.csv", newline="") as file:
        n_good = sum(row["label"] == "0" for row in csv.DictReader(file))
    said = capsys.readouterr().out
    assert f"TNR 0.000 ({n_good} of {n_good} good parts flagged), TPR 1.000 (0 of" in said
    assert "Warning: it flags most good parts" in said  # a threshold on the wrong scale is not passed over quietly
    damaged = tmp_path / "damaged_run"
    damaged.mkdir()
    shutil.copy(run_dir / "model.keras", damaged)
    header, first, *rest = (run_dir / "scores.csv").read_text().splitlines()
    fields = first.split(",")
    fields[3] = "n/a"  # a score edited by hand
    (damaged / "scores.csv").write_text("\n".join([header, ",".join(fields), *rest]) + "\n")
    assert export_main([str(damaged), "--working-point", metrics["active_working_point"], "--out", str(tmp_path / "c")]) == 0
    assert "scores.csv cannot be read as the run's evaluation wrote it" in capsys.readouterr().out


def test_scores_read_back_tie_with_a_threshold_set_at_one_of_them_as_the_model_compares(tmp_path):
    """A test score reused as a threshold (the factory threshold, the best one) passes that image in the model
    (float32): read back as float64 from its shortest text it was flagged, and adtf-export's TNR came out low."""
    from adtf.evaluate import read_scores
    from adtf.metrics import flagged

    (tmp_path / "scores.csv").write_text("path,label,defect,score,anomalous (max_normal),invalid\n"
                                         "a.png,0,good,0.1017129,0,0\nb.png,1,crack,inf,1,1\n")
    scores = read_scores(tmp_path / "scores.csv")["scores"]["score"]
    threshold = float(np.float32(0.1017129))  # as metrics.json records a threshold the model keeps
    assert flagged(scores, threshold).tolist() == [False, True]


def test_export_logs_no_temporary_folder_where_tensorflow_logs_at_info(run_dir, tmp_path, caplog):
    """In a notebook TensorFlow's logger shows INFO: its "Assets written to: <folder>" named the temporary folder
    that the export renames a moment later, so a user looked for a SavedModel that was not there."""
    import logging

    logger = logging.getLogger("tensorflow")
    level, logger.level = logger.level, logging.INFO
    try:
        with caplog.at_level(logging.INFO, logger="tensorflow"):
            assert export_main([str(run_dir), "--out", str(tmp_path / "exported")]) == 0
    finally:
        logger.setLevel(level)
    assert (tmp_path / "exported" / "saved_model.pb").is_file()
    assert not [record.getMessage() for record in caplog.records if "Assets written" in record.getMessage()]


def test_export_never_replaces_a_folder_that_is_not_a_saved_model(run_dir, tmp_path, capsys):
    """`--out` at TF Serving's model base path deleted every version there; at the run folder, the whole run."""
    base = tmp_path / "models" / "adtf"
    assert export_main([str(run_dir), "--out", str(base / "1")]) == 0
    assert export_main([str(run_dir), "--out", str(base / "sm")]) == 0
    assert export_main([str(run_dir), "--out", str(base / "sm")]) == 0  # an earlier SavedModel is replaced
    capsys.readouterr()
    # but not a version folder's: TF Serving would go on serving what it loaded from it (another model, say)
    assert export_main([str(run_dir), "--out", str(base / "1")]) == 2
    assert f"Export the next version, {base / '2'}, or delete {base / '1'} first" in capsys.readouterr().err
    (base / "sm").rename(tmp_path / "sm")
    (base / "NOTES.txt").write_text("keep")
    assert export_main([str(run_dir), "--out", str(base)]) == 2
    assert f"e.g. {base / '2'}" in capsys.readouterr().err
    assert (base / "NOTES.txt").read_text() == "keep" and (base / "1" / "saved_model.pb").is_file()
    before = sorted(p.name for p in run_dir.iterdir())
    assert export_main([str(run_dir), "--out", str(run_dir)]) == 2
    assert sorted(p.name for p in run_dir.iterdir()) == before
    said = capsys.readouterr().err  # not a version folder inside the run, as for a model base path
    assert "is a run folder" in said and "saved_model-<working point>" in said and f"{run_dir / '1'}" not in said
    (tmp_path / "empty").mkdir()
    assert export_main([str(run_dir), "--out", str(tmp_path / "empty")]) == 0


def test_export_into_a_run_folder_it_cannot_write_says_so_before_any_export(run_dir, tmp_path, capsys, monkeypatch):
    """A read-only run folder failed only after the graphs were traced, naming a hidden temporary folder; with
    --save-model --out elsewhere, the new SavedModel was written and then the run's own model.keras could not be."""
    import tempfile

    from adtf.detectors.base import Detector

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    temporary_file = tempfile.TemporaryFile

    links = tmp_path / "models"  # TF Serving's read-only folder of links: /models/current -> the version to serve
    links.mkdir()
    (links / "current").symlink_to(tmp_path / "served")

    def read_only_run(*args, dir=None, **kwargs):
        if dir is not None and pathlib.Path(dir).resolve() in (run.resolve(), links.resolve()):
            raise PermissionError(13, "Permission denied")
        return temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_run)
    monkeypatch.setattr(Detector, "export", lambda *a, **k: pytest.fail("exported into a folder it cannot write"))
    capsys.readouterr()
    assert export_main([str(run), "--working-point", "threshold1"]) == 2
    assert f"the run folder {run}: cannot write there (Permission denied)" in capsys.readouterr().err
    assert export_main([str(run), "--working-point", "threshold1", "--save-model", "--out", str(tmp_path / "sm")]) == 2
    assert f"--save-model rewrites model.keras in {run}: cannot write there" in capsys.readouterr().err
    assert not (tmp_path / "sm").exists()
    monkeypatch.undo()  # exports again, except into the read-only folders
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_run)
    assert export_main([str(run), "--out", str(links / "current")]) == 0  # written where the link points
    assert (tmp_path / "served" / "saved_model.pb").is_file() and (links / "current").is_symlink()


def test_export_save_model_brings_the_run_s_report_to_the_new_working_point(run_dir, tmp_path, capsys):
    """--save-model moved model.keras and the SavedModel while metrics.json, report.md and scores.csv still described
    the old working point; what they say now must be what evaluating the saved model again says."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)

    def rows(folder):
        with open(folder / "scores.csv", newline="") as file:
            return list(csv.reader(file))

    d_max = sorted(float(row[4]) for row in rows(run)[1:])
    value = (d_max[len(d_max) // 2] + d_max[len(d_max) // 2 + 1]) / 2  # between two test scores: flags half of them
    plot = (run / "scores.png").read_bytes()
    assert eval_main([str(run), "--data", "synthetic:grass", "--quiet"]) == 0  # the run's own eval-* report
    (run / "score-parts").mkdir()  # where adtf-score wrote verdicts at the old working point
    capsys.readouterr()
    assert export_main([str(run), f"--threshold={value}", "--score", "d_max", "--save-model"]) == 0
    assert (run / "scores.png").read_bytes() != plot  # drawn again, with the new threshold
    metrics = json.loads((run / "metrics.json").read_text())
    active = metrics["active_working_point"]
    assert json.loads((run / "eval-synthetic-grass" / "metrics.json").read_text())["active_working_point"] == active
    assert "score-parts in " in capsys.readouterr().err  # its verdicts cannot be recomputed: named as stale
    assert active.startswith("explicit:d_max>") and f"{active} (active)" in (run / "report.md").read_text()
    assert "The heat maps' titles give the verdicts at threshold" in (run / "report.md").read_text()  # not redrawn
    exported = [json.loads(p.read_text()) for p in run.glob("saved_model*/assets.extra/adtf.json")]
    assert [m["threshold_score"] for m in exported if m["working_point"] == active] == ["d_max"]  # not only in a name
    assert eval_main([str(run), "--data", "synthetic:grass", "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert again["active_working_point"] == active and again["method"] == metrics["method"] == "mon"
    assert {k: metrics["working_points"][active][k] for k in ("tpr", "tnr")} == \
        pytest.approx({k: again["working_points"][active][k] for k in ("tpr", "tnr")})
    assert rows(run)[0][-2] == f"anomalous ({active})"
    assert [row[-2] for row in rows(run)] == [row[-2] for row in rows(tmp_path / "ev")]
    (run / "metrics.json").write_text("[]")  # written by something else: said, not a TypeError after the export
    assert export_main([str(run), "--working-point", "threshold1", "--save-model"]) == 0


def test_export_save_model_again_mends_a_run_whose_reports_an_interrupted_one_left_behind(run_dir, tmp_path, capsys):
    """Ctrl-C after model.keras was written and before the reports were: the same command again saw no change of
    working point and refreshed nothing, so the reports kept describing the old one."""
    from adtf.detectors import load

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    detector = load(run / "model.keras")
    detector.set_working_point(value=0.5, score=detector.score_names[0])
    detector.save(run / "model.keras")  # where the interrupted command stopped
    assert export_main([str(run), "--threshold=0.5", "--score", detector.score_names[0], "--save-model"]) == 0
    assert json.loads((run / "metrics.json").read_text())["active_working_point"] == detector.working_point
    capsys.readouterr()
    assert export_main([str(run), "--working-point", "threshold1", "--out", str(tmp_path / "sm")]) == 0
    assert "model.keras, and so adtf-score and adtf-eval, still judge at explicit" in capsys.readouterr().out


def test_export_save_model_with_out_moves_the_run_s_own_saved_model_too(run_dir, tmp_path):
    """--out with --save-model wrote only --out: the run's saved_model kept the old threshold while model.keras, the
    report, adtf-score and adtf-eval moved to the new one."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert export_main([str(run), "--working-point", "threshold1", "--save-model",
                        "--out", str(tmp_path / "models" / "1")]) == 0
    for folder in (tmp_path / "models" / "1", run / "saved_model"):
        assert json.loads((folder / "assets.extra" / "adtf.json").read_text())["working_point"] == "threshold1"
    assert json.loads((run / "metrics.json").read_text())["active_working_point"] == "threshold1"


def test_eval_and_score_draw_heat_maps_on_the_run_s_colour_scale_with_each_verdict(run_dir, tmp_path, monkeypatch):
    """adtf-score stretched the colour scale to each folder's own maps (a good part scored among good ones looked
    covered in defects), and every heat map's title gave the truth where a reader looked for the verdict."""
    from adtf import viz

    drawn = []
    real = viz.heatmap_grid
    monkeypatch.setattr(viz, "heatmap_grid", lambda images, maps, titles, path, **kw: (
        drawn.append((titles, kw["vmin"], kw["vmax"], kw["scale_label"])), real(images, maps, titles, path, **kw))[1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scale = metrics["heatmap_scale"]
    assert scale[0] < scale[1]
    flagged = metrics["flagged_by_defect"]
    assert flagged["good"] == pytest.approx(1 - metrics["working_points"][metrics["active_working_point"]]["tnr"])
    assert f"| flagged at {metrics['active_working_point']} |" in (run_dir / "report.md").read_text()
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    assert drawn and all([low, high] == scale and "the run's" in label for _, low, high, label in drawn)
    verdicts = {title.split("\n")[0].split(": ")[-1] for titles, *_ in drawn for title in titles}
    assert verdicts <= {"passed", "FALSE ALARM", "caught", "MISSED"} and verdicts
    drawn.clear()
    real_write = viz.PartOverlays.write
    monkeypatch.setattr(viz.PartOverlays, "write", lambda self, image, anomaly_map, title, path: (
        drawn.append(([title], self.vmin, self.vmax, self.scale_label)), real_write(self, image, anomaly_map, title, path))[1])
    rows = list(csv.DictReader(open(run_dir / "scores.csv")))
    (tmp_path / "parts").mkdir()
    for row in [r for r in rows if r["label"] == "0"][:2]:  # good parts alone: once drawn on a scale of their own
        shutil.copy(row["path"], tmp_path / "parts")
    assert score_main([str(run_dir), str(tmp_path / "parts"), "--heatmaps", "all", "--out", str(tmp_path / "sc"),
                       "--quiet"]) == 0
    assert len(drawn) == 2 and all([low, high] == scale for _, low, high, _ in drawn)
    assert all(titles[0].split(" ")[0] in ("passed", "FLAGGED") for titles, *_ in drawn)


def test_eval_warns_before_scoring_where_the_pixel_metrics_outgrow_memory_and_can_skip_them(run_dir, tmp_path,
                                                                                            monkeypatch, capsys):
    """adtf-eval kept every map for the pixel metrics, whose working memory grows with the test set: a set too
    large for the machine was killed after its whole scoring, with nothing said before and no way to skip them."""
    from adtf import evaluate as evaluation
    from adtf import data, machine, viz
    from adtf.detectors import load
    from adtf.detectors.mon import ModelOfNormality

    monkeypatch.setattr(machine, "available_memory", lambda: 2**30)  # 1 GiB free
    with pytest.warns(UserWarning, match=r"650 maps of 512x512 need about 3\.5 GiB, and 1\.0 GiB .*--no-pixel-metrics"):
        evaluation.warn_if_pixel_metrics_outgrow_memory(650, (512, 512))  # a DAGM class (measured: 3.6 GiB)
    monkeypatch.setattr(machine, "available_memory", lambda: 1024)  # too little for this run's few small maps
    kept = []
    score_dataset = ModelOfNormality.score_dataset

    def watched(self, *args, **kwargs):
        kept.append((kwargs.get("keep_maps", True), kwargs.get("keep_masks", True)))
        return score_dataset(self, *args, **kwargs)

    monkeypatch.setattr(ModelOfNormality, "score_dataset", watched)
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "all"), "--quiet"]) == 0
    assert "adtf-eval: warning: the pixel metrics of 100 maps of 64x64 need about 9 MiB" in capsys.readouterr().err
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "ev"), "--quiet",
                      "--no-pixel-metrics"]) == 0
    printed = capsys.readouterr()
    assert "need about" not in printed.err  # nothing to warn of: skipped
    results = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert results["pixel_auroc"] is None and results["aupro"] is None and results["image_auroc"] is not None
    # Skipped, the metrics keep no map and no mask: the few that the heat maps draw are scored and read again, the
    # same maps and masks
    assert kept == [(True, True), (False, False)]
    assert all((tmp_path / "ev" / name).stat().st_size > 0 for name in results["plots"].values())
    detector, dataset = load(run_dir / "model.keras"), data.load("synthetic:grass")
    outputs = detector.score_dataset(data.pipeline(dataset.test, arrays=dataset.arrays, image_size=detector.image_size,
                                                   batch_size=8),
                                     verbose=False)
    picked = [0, 57, 99]
    again = evaluation.maps_of(detector, dataset.test, dataset.arrays, {}, picked, batch_size=2)
    np.testing.assert_allclose(again, outputs["anomaly_map"][picked], rtol=1e-5, atol=1e-6)
    images, masks = viz.images_of([dataset.test[i] for i in picked], dataset.arrays, detector.image_size,
                                  with_masks=True)
    assert masks.dtype == bool and masks[1:].any() and np.array_equal(masks, outputs["mask"][picked])
    assert "skipped as asked (--no-pixel-metrics" in printed.out
    assert "skipped as asked (--no-pixel-metrics" in (tmp_path / "ev" / "report.md").read_text()


def test_free_memory_is_the_cgroups_where_a_container_caps_it(tmp_path):
    """psutil reads the host's memory: inside a container with --memory the warning above would never fire."""
    from adtf import machine

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{2 * 2**30}\n")
    (v2 / "memory.current").write_text(f"{int(1.5 * 2**30)}\n")
    (v2 / "memory.stat").write_text(f"anon 1000\ninactive_file {2**29}\n")  # reclaimable page cache
    assert machine.available_memory(v2) == 2**30
    (v2 / "memory.max").write_text("max\n")
    assert machine.available_memory(v2) > 2**30  # no limit: the system's figure (this machine has more than 1 GiB)
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    (v1 / "memory.stat").write_text("total_inactive_file 0\n")
    assert machine.available_memory(tmp_path / "v1") == 0
    assert machine.available_memory(tmp_path / "nowhere") > 0  # no cgroup files: the system's figure


def test_an_uncalibrated_detector_is_not_exported(tmp_path):
    """Its thresholds are +inf, which flag every part: served, it would judge nothing."""
    from adtf.detectors.mon import ModelOfNormality
    from adtf.errors import AdtfError

    detector = ModelOfNormality(backbone="efficientnet_lite0", layer="block2b_add", image_size=(32, 32), weights=None)
    detector.fit(np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32"), verbose=0)
    with pytest.raises(AdtfError, match="no working point, and served so it would flag every part"):
        detector.export(tmp_path / "saved_model")
    assert not (tmp_path / "saved_model").exists()
    detector.save(tmp_path / "model.keras")  # adtf-export named its folder first: an AttributeError on None
    assert export_main([str(tmp_path / "model.keras")]) == 2


def test_export_by_default_writes_beside_the_run_s_own_savedmodel(run_dir):
    """Another working point goes to saved_model-<point>: overwriting saved_model left the served model at another
    working point than the run's model.keras and metrics.json, and adtf-eval then reported the other one."""
    active = json.loads((run_dir / "saved_model" / "assets.extra" / "adtf.json").read_text())["working_point"]
    other = next(name for name in (f"threshold{i}" for i in range(1, 7)) if name != active)
    assert export_main([str(run_dir), "--working-point", other]) == 0
    assert json.loads((run_dir / f"saved_model-{other}" / "assets.extra" / "adtf.json").read_text())[
        "working_point"] == other
    assert json.loads((run_dir / "saved_model" / "assets.extra" / "adtf.json").read_text())["working_point"] == active


def test_a_report_is_never_written_into_another_set_s_image_folder(run_dir, tmp_path, capsys):
    """adtf-eval --out into a folder of images wrote its heat maps there, and the next fit on that folder took them
    for normal parts."""
    (tmp_path / "parts").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "parts" / "a.png")
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "parts"), "--quiet"]) == 2
    assert "holds images that adtf did not draw (e.g. a.png): a data folder?" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["a.png"]
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    for record in ("metrics.json", "eval.json", "scores.csv"):  # an evaluation stopped after its plots, before these
        (tmp_path / "ev" / record).unlink()
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "ev"), "--quiet"]) == 0


def test_a_folder_of_the_user_s_own_files_is_not_written_over(run_dir, tmp_path, capsys):
    """--out at a folder of one's own notes: its metrics.json and scores.csv were replaced without a word."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("{}")
    (mine / "notes.txt").write_text("shift 2")
    (tmp_path / "parts").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "parts" / "a.png")
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(mine), "--quiet"]) == 2
    assert score_main([str(run_dir), str(tmp_path / "parts"), "--out", str(mine), "--quiet"]) == 2
    assert fit_main(["--method", "mon", "--data", "synthetic:grass", "--out", str(mine), "--quiet"]) == 2
    assert capsys.readouterr().err.count(f"--out {mine} holds metrics.json, which adtf did not write") == 3
    assert (mine / "metrics.json").read_text() == "{}" and sorted(p.name for p in mine.iterdir()) == \
        ["metrics.json", "notes.txt"]
    (mine / "metrics.json").unlink()  # notes alone: nothing of theirs is replaced
    assert score_main([str(run_dir), str(tmp_path / "parts"), "--out", str(mine), "--quiet"]) == 0
    assert score_main([str(run_dir), str(tmp_path / "parts"), "--out", str(mine), "--quiet"]) == 0  # adtf's own now


def test_a_fit_replaces_no_saved_model_or_model_keras_of_the_user_s_and_leaves_a_backup_folder_it_did_not_make(
        run_dir, tmp_path, capsys):
    """--out at a folder of one's own: its saved_model/ and backup/ were deleted, its model.keras written over."""
    import zipfile

    mine = tmp_path / "mine"
    (mine / "saved_model").mkdir(parents=True)
    (mine / "saved_model" / "saved_model.pb").write_bytes(b"a model of theirs")
    (mine / "backup").mkdir()
    (mine / "backup" / "important.txt").write_text("notes")
    argv = ["--method", "mon", "--data", "synthetic:grass", "--detector.image_size", "[32, 32]", "--out", str(mine),
            "--quiet", "--no-export"]
    assert fit_main(argv) == 2
    assert f"--out {mine} holds saved_model/, which adtf did not write" in capsys.readouterr().err
    (mine / "saved_model").rename(tmp_path / "theirs")
    with zipfile.ZipFile(mine / "model.keras", "w") as archive:  # a Keras model of their own
        archive.writestr("config.json", '{"class_name": "Functional", "registered_name": "Functional"}')
    assert fit_main(argv) == 2
    assert f"--out {mine} holds model.keras, which adtf did not write" in capsys.readouterr().err
    (mine / "model.keras").write_bytes(b"cut short")
    assert fit_main(argv) == 2
    assert f"--out {mine} holds a model.keras that cannot be read (damaged, or no .keras file)" in capsys.readouterr().err
    (mine / "model.keras").unlink()
    older = tmp_path / "older"  # a run of an adtf before adtf_format, which load() says to fit again
    older.mkdir()
    shutil.copy(pathlib.Path(__file__).parent / "fixtures" / "mon_saved_by_adtf_0_1.keras", older / "model.keras")
    assert fit_main([*argv[:-4], "--out", str(older), "--quiet", "--no-export"]) == 0
    assert fit_main(argv) == 0  # MoN trains no epochs: the backup/ it did not make stays
    assert (mine / "backup" / "important.txt").read_text() == "notes"
    assert fit_main(argv) == 0  # its own run now
    shutil.rmtree(mine / "backup")  # an interrupted trained fit's checkpoints: a later MoN run ends them
    (mine / "backup").mkdir()
    (mine / "backup" / "run_config.json").write_text("{}")
    assert fit_main(argv) == 0 and not (mine / "backup").exists()


def test_thresholds_that_differ_in_their_exponent_s_sign_export_to_two_folders(run_dir, tmp_path):
    """1e+38 and 1e-38 both became saved_model-explicit-d_max-1e-38: the second replaced the first without a word."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for value in ("1e38", "1e-38"):
        assert export_main([str(run), f"--threshold={value}", "--score", "d_max"]) == 0
    assert sorted(p.name for p in run.glob("saved_model-explicit*")) == ["saved_model-explicit-d_max-1e-38",
                                                                         "saved_model-explicit-d_max-1e38"]


def test_eval_reuses_a_saved_run(run_dir, tmp_path, capsys):
    # never into a run folder (this one, or another): its report would replace the run's own metrics and scores
    metrics = (run_dir / "metrics.json").read_bytes()
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(run_dir), "--quiet"]) == 2
    (tmp_path / "parts").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "parts" / "a.png")
    assert score_main([str(run_dir), str(tmp_path / "parts"), "--out", str(run_dir), "--quiet"]) == 2
    assert capsys.readouterr().err.count("is a run folder (run.json, model.keras)") == 2
    assert (run_dir / "metrics.json").read_bytes() == metrics
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    first = json.loads((run_dir / "metrics.json").read_text())
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert again["image_auroc"] == pytest.approx(first["image_auroc"], abs=1e-6)
    # the report says how the run calibrated, not a default
    assert first["calibration"] and [again[k] for k in ("calibration", "n_calibration", "n_train")] == \
        [first[k] for k in ("calibration", "n_calibration", "n_train")]


def test_eval_draws_the_test_images_of_the_run_s_seed_unless_told_another(run_dir, tmp_path, capsys):
    """A run fitted with --seed 3 evaluated on its own spec: seed 0's draw would be other images, some of them the
    run's training images, and its figures not the run's."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data_seed"] == 0  # the run's own scores.csv is seed 0's draw
    metrics["data_seed"] = 3  # as a fit with --seed 3 records it
    (run / "metrics.json").write_text(json.dumps(metrics))
    capsys.readouterr()
    assert eval_main([str(run), "--data", "synthetic:grass", "--out", str(tmp_path / "run_seed"), "--quiet"]) == 0
    assert "adtf-eval: --seed 3, the run's" in capsys.readouterr().out
    assert eval_main([str(run), "--data", "synthetic:grass", "--seed", "0", "--out", str(tmp_path / "seed0"),
                      "--quiet"]) == 0
    scores = {name: (tmp_path / name / "scores.csv").read_text() for name in ("run_seed", "seed0")}
    assert scores["seed0"] == (run / "scores.csv").read_text() != scores["run_seed"]


def test_eval_says_when_it_replaces_an_evaluation_of_other_images(run_dir, tmp_path, capsys):
    """The grass at 128 and at 96 px share a name and so a report folder: the second evaluation replaced the first
    without a word (and run.json named neither size)."""
    out = tmp_path / "ev"
    for spec in ("synthetic:grass", "synthetic:grass", "synthetic:grass,size=96"):
        assert eval_main([str(run_dir), "--data", spec, "--out", str(out), "--quiet"]) == 0
        said = capsys.readouterr().err
        assert ("holds an evaluation with other settings (test_images differ)" in said) == (spec.endswith("96"))
        assert "this run was fitted or calibrated on" not in said
        assert json.loads((out / "eval.json").read_text())["spec"] == spec
    assert json.loads((run_dir / "run.json").read_text())["spec"] == "synthetic:grass"


def test_eval_says_when_its_test_images_are_the_run_s_own_training_images(run_dir, tmp_path, capsys):
    """Evaluating on the folder one trained on scored TNR 1.000 and said nothing: adtf-fit warned of such a test set,
    adtf-eval did not know the fitted files."""
    fitted = (run_dir / "fit_images.txt").read_text().splitlines()  # MoN calibrates on them too
    good = tmp_path / "good"
    good.mkdir()
    for i, path in enumerate(fitted[:3]):
        (good / f"{i}.png").symlink_to(path)
    assert eval_main([str(run_dir), "--data", f"folder:{good}", "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    warning = "3 of the 3 test images are images this run was fitted or calibrated on"
    assert warning in capsys.readouterr().err
    assert warning in (tmp_path / "ev" / "report.md").read_text()


def test_the_run_s_training_images_are_read_from_its_fit_and_calibration_lists(tmp_path):
    from adtf.cli import _images_the_run_trained_on
    from adtf.data.samples import Sample

    images = [tmp_path / f"{name}.png" for name in "abcde"]
    for image in images:
        image.write_bytes(b"")
    (tmp_path / "fit_images.txt").write_text(f"{images[0]}\n")
    (tmp_path / "calibration_images.txt").write_text(f"0\t{images[1]}\n1\t{images[2]}\n")  # cross-fitted folds
    (tmp_path / "link.png").symlink_to(images[2])
    samples = [Sample(str(path), 0, "good") for path in [*images[3:], tmp_path / "link.png", images[1], images[0]]]
    assert _images_the_run_trained_on(tmp_path, samples) == [str(tmp_path / "link.png"), str(images[1]), str(images[0])]
    assert _images_the_run_trained_on(tmp_path / "no_run", samples) == []


def test_eval_on_good_parts_alone_says_how_many_each_working_point_passes(run_dir, tmp_path):
    """A batch of new good parts is what a quality engineer checks a threshold on: its TNR was left out (with the
    working points) wherever the test set held one class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "good").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / "good" / f"{i}.png")
    out = tmp_path / "ev"
    assert eval_main([str(run_dir), "--data", f"folder:{tmp_path / 'good'}", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_auroc"] is None and metrics["working_points"]
    from adtf.detectors import load

    outputs = load(run_dir / "model.keras").infer(
        np.stack([np.asarray(Image.open(tmp_path / "good" / f"{i}.png"), np.float32) / 255 for i in range(5)]))
    for point in metrics["working_points"].values():
        assert point["tpr"] is None and point["auc"] is None
        assert point["tnr"] == pytest.approx(np.mean(outputs[point["score"]] <= point["threshold"]))
    assert "all normal" in (out / "report.md").read_text()


def test_a_file_that_changes_after_the_check_stops_the_scoring_in_one_line(run_dir, tmp_path):
    """A camera still writing a file when it is scored: TensorFlow's traceback, no file named, and the last
    scoring's score.json left beside the new scores.csv."""
    from PIL import Image

    from adtf import data
    from adtf.detectors import load
    from adtf.errors import AdtfError
    from adtf.evaluate import score_parts

    (tmp_path / "parts").mkdir()
    for i in range(3):
        Image.fromarray(np.full((SIZE, SIZE, 3), 60 * i, np.uint8)).save(tmp_path / "parts" / f"{i}.png")
    detector = load(run_dir / "model.keras")
    dataset = data.load(f"folder:{tmp_path / 'parts'}", flag_unusable=True)
    score_parts(detector, dataset, tmp_path / "out", verbose=False)
    whole = (tmp_path / "parts" / "1.png").read_bytes()
    (tmp_path / "parts" / "1.png").write_bytes(whole[: len(whole) // 2])  # checked whole, then cut short
    with pytest.raises(AdtfError, match="a file changed after it was checked"):
        score_parts(detector, dataset, tmp_path / "out", verbose=False)
    assert not (tmp_path / "out" / "score.json").exists()  # no summary of the earlier scoring beside it


def test_a_relative_folder_is_scored_under_its_whole_name_with_whole_paths(run_dir, tmp_path, monkeypatch, capsys):
    """`adtf-score RUN parts` wrote score-folder-parts and bare relative paths: another folder named parts, scored
    from elsewhere, replaced it, and scores.csv did not say which folder its rows were in."""
    from PIL import Image

    shutil.copytree(run_dir, tmp_path / "run")
    parts = tmp_path / "line3" / "parts"
    parts.mkdir(parents=True)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(parts / "0.png")
    monkeypatch.chdir(tmp_path / "line3")
    assert score_main([str(tmp_path / "run"), "parts", "--quiet"]) == 0
    with open(tmp_path / "run" / "score-folder-line3-parts" / "scores.csv", newline="") as file:
        assert [row["path"] for row in csv.DictReader(file)] == [str(parts / "0.png")]
    (tmp_path / "run" / "fit_images.txt").write_text(str(parts / "0.png") + "\n")  # as if the run had fitted it
    capsys.readouterr()
    assert score_main([str(tmp_path / "run"), "parts", "--quiet"]) == 0
    assert "1 of the 1 parts are images this run was fitted or calibrated on" in capsys.readouterr().err


def test_score_names_a_missing_folder_of_parts_as_such(run_dir, tmp_path, capsys):
    """adtf-score reads no labels, yet said "normal images folder not found"."""
    (tmp_path / "a.png").write_bytes(b"")
    assert score_main([str(run_dir), str(tmp_path / "nope"), "--quiet"]) == 2
    assert score_main([str(run_dir), str(tmp_path / "a.png"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"folder of parts not found: {tmp_path / 'nope'}" in err and "normal" not in err
    assert f"{tmp_path / 'a.png'} is a file: give the folder that holds the parts' images" in err
    (tmp_path / "day" / "line1").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "day" / "line1" / "a.png")
    assert score_main([str(run_dir), str(tmp_path / "day"), "--quiet"]) == 2
    err = capsys.readouterr().err  # not adtf-fit's folder:DIR,anomalous= spec, which adtf-score does not take
    assert "only in its subfolders (line1/): adtf-score scores one folder's images; give each" in err


def test_score_refuses_a_model_with_no_working_point(run_dir, tmp_path, capsys):
    """A fitted, never calibrated model: adtf-score warned, then wrote 'anomalous 0' for every part, defects too."""
    from adtf import data
    from adtf.detectors.mon import ModelOfNormality

    dataset = data.load("synthetic:grass")
    uncalibrated = ModelOfNormality(layer="block4c_add", image_size=(SIZE, SIZE))
    uncalibrated.fit(data.pipeline(dataset.train[:8], arrays=dataset.arrays, image_size=(SIZE, SIZE), batch_size=8),
                     verbose=0)
    uncalibrated.save(tmp_path / "uncalibrated.keras")
    (tmp_path / "parts").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "parts" / "a.png")
    assert score_main([str(tmp_path / "uncalibrated.keras"), str(tmp_path / "parts"), "--quiet",
                       "--out", str(tmp_path / "verdicts")]) == 2
    assert "has no working point (never calibrated): it would flag every part" in capsys.readouterr().err
    assert not (tmp_path / "verdicts").exists()  # refused before the parts were read or a folder made
    from adtf.errors import AdtfError
    from adtf.evaluate import evaluate, score_parts

    with pytest.raises(AdtfError, match="the ModelOfNormality has no working point"):  # from Python too
        score_parts(uncalibrated, data.load(f"folder:{tmp_path / 'parts'}"), tmp_path / "py", verbose=False)
    evaluate(uncalibrated, dataset, tmp_path / "ev", verbose=False)  # no working point: no verdicts written
    rows = list(csv.DictReader((tmp_path / "ev" / "scores.csv").open()))
    assert {row["anomalous (no working point)"] for row in rows} == {""}
    from adtf.detectors import load

    damaged = load(run_dir / "model.keras")  # a NaN threshold (a damaged file) judges nothing either
    damaged.postprocess.set_point(damaged.working_point, np.nan, damaged.score_names[0])
    evaluate(damaged, dataset, tmp_path / "ev-nan", verbose=False)
    rows = list(csv.DictReader((tmp_path / "ev-nan" / "scores.csv").open()))
    assert {row[f"anomalous ({damaged.working_point})"] for row in rows} == {""}


def test_score_gives_each_unjudged_part_a_verdict_and_the_flagged_ones_a_heat_map(run_dir, tmp_path, capsys):
    """A folder of parts nobody has labelled: adtf-eval would count them all as good parts; adtf-score reads no
    label, writes each part's score and verdict, and an overlay of each flagged part."""
    from PIL import Image

    from adtf.detectors import load

    rng = np.random.default_rng(1)
    parts = tmp_path / "parts, lot 2"  # a comma, a data spec's separator, in the folder's name
    parts.mkdir()
    for i in range(5):
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        image[8:40, 8:40] = 255 * (i % 2)  # some parts with a large flat square: scored far from grass
        Image.fromarray(image).save(parts / f"{i}.png")
    out = tmp_path / "scored"
    assert score_main([str(run_dir), str(parts), "--out", str(out), "--quiet"]) == 0
    with open(out / "scores.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    detector = load(run_dir / "model.keras")
    verdict = f"anomalous ({detector.working_point})"
    assert len(rows) == 5 and "label" not in rows[0] and verdict in rows[0]
    images = np.stack([np.asarray(Image.open(parts / f"{i}.png"), np.float32) / 255 for i in range(5)])
    expected = np.asarray(detector.infer(images)["anomalous"]).astype(int)
    by_name = {pathlib.Path(row["path"]).name: int(row[verdict]) for row in rows}
    assert [by_name[f"{i}.png"] for i in range(5)] == expected.tolist()  # the model's own verdicts, in any order
    heatmaps = sorted(p.name for p in (out / "heatmaps").glob("*.png")) if (out / "heatmaps").exists() else []
    assert len(heatmaps) == expected.sum()
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the parts' scores about the thresholds
    printed = capsys.readouterr()
    assert f"{expected.sum()} of 5 parts flagged (working point {detector.working_point}" in printed.out
    # The parts are 64 px, the fit's images 128 (synthetic:grass): as adtf-eval, adtf-score says so, and records it.
    scale = "adtf-score: warning: these images are a median 64x64 px and those the model was fitted on 128x128"
    assert scale in printed.err and "appears 2.0x larger" in printed.err
    summary = json.loads((out / "score.json").read_text())
    assert summary["n_flagged"] == expected.sum()
    assert any(note.startswith("these images are a median 64x64") for note in summary["notes"])
    # The parts are colour, every fitted grass image grayscale: a change the model never saw, said and recorded.
    colour = "adtf-score: warning: the parts: all 5 of these images are colour (e.g. "
    assert colour in printed.err and "while every image the model was fitted on is grayscale" in printed.err
    assert any(note.startswith("the parts: all 5 of these images are colour") for note in summary["notes"])
    assert score_main([str(run_dir), str(parts), "--out", str(out), "--quiet", "--heatmaps", "all"]) == 0
    assert len(list((out / "heatmaps").glob("*.png"))) == 5
    assert score_main([str(run_dir), str(parts), "--out", str(out), "--quiet", "--heatmaps", "none"]) == 0
    assert not list((out / "heatmaps").glob("*.png"))  # no overlay left from an earlier scoring to mislead
    broken = parts / "2_broken.png"  # a capture cut short: scored as flagged, the rest as before
    broken.write_bytes((parts / "0.png").read_bytes()[:200])
    capsys.readouterr()
    assert score_main([str(run_dir), str(parts), "--out", str(out), "--quiet", "--heatmaps", "none"]) == 0
    with open(out / "scores.csv", newline="") as file:
        rows = {pathlib.Path(row["path"]).name: row for row in csv.DictReader(file)}
    assert list(rows) == ["0.png", "1.png", "2.png", "2_broken.png", "3.png", "4.png"]  # the folder's order
    assert len(rows) == 6 and [int(rows[f"{i}.png"][verdict]) for i in range(5)] == expected.tolist()
    broken_row = rows["2_broken.png"]
    assert (broken_row[verdict], broken_row["invalid"], broken_row["score"]) == ("1", "1", "inf")
    assert "2_broken.png" in broken_row["problem"] and not rows["0.png"]["problem"]
    printed = capsys.readouterr()
    assert f"{expected.sum() + 1} of 6 parts flagged" in printed.out and "1 unreadable file(s), flagged" in printed.out
    assert f"flagged, as it cannot be read: {broken}" in printed.err and "skipping" not in printed.err
    assert not any(note.startswith("skipping") for note in json.loads((out / "score.json").read_text())["notes"])
    unreadable = tmp_path / "unreadable"  # every file unreadable, one named in Latin-1: each flagged, none lost
    unreadable.mkdir()
    broken.rename(unreadable / "2_broken.png")
    (unreadable / "0.png").write_bytes((parts / "0.png").read_bytes())
    os.rename(os.fsencode(unreadable / "0.png"), os.fsencode(unreadable) + b"/\xe9t\xe9.png")
    assert score_main([str(run_dir), str(unreadable), "--out", str(tmp_path / "none_read"), "--quiet"]) == 0
    with open(tmp_path / "none_read" / "scores.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert sorted(pathlib.Path(row["path"]).name for row in rows) == ["2_broken.png", "\\xe9t\\xe9.png"]
    assert all(row[verdict] == "1" and row["invalid"] == "1" for row in rows)
    assert "2 of 2 parts flagged" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert score_main([str(run_dir), str(tmp_path / "empty"), "--quiet"]) == 2
    assert "no images" in capsys.readouterr().err


def test_eval_on_a_folder_counts_its_normal_images_as_test_normals(run_dir, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, n in (("good", 4), ("bad", 3)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            if folder == "bad":
                image[8:24, 8:24] = 255
            Image.fromarray(image).save(tmp_path / folder / f"{i}.png")
    out = tmp_path / "ev"
    spec = f"folder:{tmp_path / 'good'},anomalous={tmp_path / 'bad'}"
    assert eval_main([str(run_dir), "--data", spec, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 7 and metrics["image_auroc"] is not None  # the good folder was once left out
    assert metrics["n_train"] == json.loads((run_dir / "metrics.json").read_text())["n_train"]
    broken = tmp_path / "good" / "broken.png"
    broken.write_bytes(b"not an image")
    capsys.readouterr()
    assert eval_main([str(run_dir), "--data", spec, "--out", str(out), "--quiet", "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert f"adtf-eval: warning: skipping {broken}: cannot decode image" in err and "UserWarning" not in err


def test_eval_of_a_model_without_its_run_says_its_training_count_is_unknown(run_dir, tmp_path):
    """A .keras file on its own has no record of what it was fitted on: the evaluated folder's normal images, which
    are its test images here, were also counted as its training images."""
    from PIL import Image

    (tmp_path / "bare").mkdir()
    shutil.copy(run_dir / "model.keras", tmp_path / "bare" / "model.keras")
    (tmp_path / "good").mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            tmp_path / "good" / f"{i}.png")
    assert eval_main([str(tmp_path / "bare" / "model.keras"), "--data", f"folder:{tmp_path / 'good'}",
                      "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    results = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (results["n_train"], results["n_test"]) == (None, 3)
    assert "fitted on an unknown number of normal training images, evaluated on 3 test images" in \
        (tmp_path / "ev" / "report.md").read_text()


def test_pixel_metrics_leave_out_anomalous_images_without_a_mask(run_dir, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(1)
    for folder, names in (("good", ["g0", "g1", "g2"]), ("bad", ["b0", "b1", "nomask"])):
        (tmp_path / folder).mkdir()
        for name in names:
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            if folder == "bad":
                image[8:24, 8:24] = 255
                if name != "nomask":
                    (tmp_path / "masks").mkdir(exist_ok=True)
                    mask = np.zeros((SIZE, SIZE), np.uint8)
                    mask[8:24, 8:24] = 255
                    Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
            Image.fromarray(image).save(tmp_path / folder / f"{name}.png")
    spec = f"folder:{tmp_path / 'good'},anomalous={tmp_path / 'bad'},masks={tmp_path / 'masks'}"
    assert eval_main([str(run_dir), "--data", spec, "--out", str(tmp_path / "all"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "adtf-eval: warning: " in err and "no mask for 1 of the anomalous images" in err
    (tmp_path / "bad" / "nomask.png").unlink()
    assert eval_main([str(run_dir), "--data", spec, "--out", str(tmp_path / "masked"), "--quiet"]) == 0
    with_it, without = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("all", "masked"))
    assert with_it["n_test"] == 6 and without["n_test"] == 5
    assert with_it["pixel_auroc"] == pytest.approx(without["pixel_auroc"])  # its defect never counted as normal
    assert with_it["aupro"] == pytest.approx(without["aupro"])
    note = "the pixel metrics cover 2 of the 3 anomalous test images: 1 without a mask"  # in the report, not just stderr
    assert note in with_it["data_notes"] and note in (tmp_path / "all" / "report.md").read_text()


def test_calibration_on_held_out_normal_images(tmp_path, capsys):
    out = tmp_path / "held"
    assert fit_main(["--method", "mon", "--data", "synthetic:grass", f"--detector.image_size=[{SIZE},{SIZE}]",
                     "--detector.layer", "block3b_add", "--calibration-fraction", "0.25", "--no-export", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_calibration"]) == (150, 50)
    capsys.readouterr()
    # Refused before the data loads (a large set takes minutes): a folder that is not there is never looked at.
    assert fit_main(["--calibration-fraction", "1.5", "--data", f"folder:{tmp_path / 'absent'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--calibration-fraction is the share of normal images held out, in [0, 1); got 1.5" in err
    assert "absent" not in err
    assert fit_main(["--calibration-folds", "1", "--quiet"]) == 2
    assert "--calibration-folds must be 2 or more" in capsys.readouterr().err
    # A bench reads every spec before its first fit: refused before that too.
    assert bench_main(["--data", f"[folder:{tmp_path / 'absent'}]", "--calibration-folds", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--calibration-folds must be 2 or more" in err and "absent" not in err
    # Nothing to run is said, not an empty table (or seed 0 alone) and exit status 0.
    assert bench_main(["--data", "[]", "--quiet"]) == 2
    assert "--data [] names nothing to run" in capsys.readouterr().err
    assert bench_main(["--data", f"[folder:{tmp_path / 'absent'}]", "--seeds", "[]", "--quiet"]) == 2
    assert "--seeds [] names nothing to run" in capsys.readouterr().err


def test_normal_images_only_still_fit_calibrate_and_export(tmp_path, datasets_dir, capsys):
    out = tmp_path / "normal-only"
    good = datasets_dir / "mvtec_bottle" / "train" / "good"
    assert fit_main(["--method", "mon", "--data", f"folder:{good}", f"--detector.image_size=[{SIZE},{SIZE}]",
                     "--detector.layer", "block3b_add", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 0 and metrics["image_auroc"] is None and metrics["n_train"] == 209
    assert len(metrics["working_points"]) == 6 and (out / "saved_model" / "saved_model.pb").exists()
    assert "threshold3 (active)" in capsys.readouterr().out


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert fit_main(["--data", f"mvtec:{tmp_path / 'missing'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "adtf-fit: error:" in err and "missing" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_option: 1\n")
    assert fit_main(["--config", str(bad)]) == 2
    assert "no_such_option" in capsys.readouterr().err


def test_an_evaluation_at_another_scale_than_the_fit_says_so(run_dir, tmp_path, capsys):
    """Every image is resized to the model's input: images twice the fitted ones' size show every part at half the
    size training saw, which the user must hear, not find out from the scores."""
    from PIL import Image

    rng = np.random.default_rng(2)
    (tmp_path / "good").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "good" / f"{i}.png")
    fitted = json.loads((run_dir / "metrics.json").read_text())["fit_median_size"]
    assert fitted == [128.0, 128.0]  # synthetic:grass is drawn at 128 px and fitted at 64 (config above)
    capsys.readouterr()
    (tmp_path / "bad").mkdir()  # one grayscale image, as the fit's were: among colour ones here
    Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(tmp_path / "bad" / "0.png")
    assert eval_main([str(run_dir), "--data", f"folder:{tmp_path / 'good'},anomalous={tmp_path / 'bad'}", "--out",
                      str(tmp_path / "big"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "adtf-eval: warning: these images are a median 256x256 px and those the model was fitted on 128x128" in err
    assert "every part appears 2.0x smaller than in training" in err and "the same parts at more detail" in err
    assert "**Another scale**" in (tmp_path / "big" / "report.md").read_text()
    # Colour images, where every fitted grass image was grayscale: said too, and repeated in the report.
    assert json.loads((run_dir / "metrics.json").read_text())["fit_colour"] == "grayscale"
    assert "adtf-eval: warning: the test images: 3 of these 4 images are colour" in err
    assert "the test images: 3 of these 4 images are colour" in (tmp_path / "big" / "report.md").read_text()
    # Not the set's own training images against its test images: adtf-eval fits nothing (it once said "every normal
    # training image is colour" beside the model's fit on grayscale ones).
    assert "training image" not in err
    # A model file alone (or a run from before fit_colour): which kind it was fitted on is unknown, so a mix is said.
    (tmp_path / "bare").mkdir()
    shutil.copy(run_dir / "model.keras", tmp_path / "bare" / "model.keras")
    assert eval_main([str(tmp_path / "bare" / "model.keras"), "--data",
                      f"folder:{tmp_path / 'good'},anomalous={tmp_path / 'bad'}", "--out", str(tmp_path / "bare_eval"),
                      "--quiet"]) == 0
    assert "the test images: 1 of these 4 images is grayscale and the others colour" in capsys.readouterr().err
    assert eval_main([str(run_dir), "--data", "synthetic:grass", "--out", str(tmp_path / "same"), "--quiet"]) == 0
    assert "fitted on" not in capsys.readouterr().err
    assert "Another scale" not in (tmp_path / "same" / "report.md").read_text()


@pytest.mark.parametrize("fault, message", [
    ("inverted", "the masks mark most of their defective images' pixels"),
    ("empty", r"1 of the 2 defective images' masks mark no pixel at the \d+x\d+ the maps are scored at \(e.g. .*b1.png"),
    ("all_empty", r"2 of the 2 defective images' masks mark no pixel"),
])
def test_masks_that_contradict_their_labels_are_named_in_the_warnings_and_the_report(run_dir, tmp_path, capsys,
                                                                                    fault, message):
    from PIL import Image

    rng = np.random.default_rng(2)
    (tmp_path / "masks").mkdir()
    for folder, names in (("good", ["g0", "g1", "g2"]), ("bad", ["b0", "b1"])):
        (tmp_path / folder).mkdir()
        for name in names:
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            if folder == "bad":
                image[8:24, 8:24] = 255
                mask[8:24, 8:24] = 255
                if fault == "inverted":
                    mask = 255 - mask
                elif fault == "empty" and name == "b1" or fault == "all_empty":
                    mask[:] = 0
            Image.fromarray(image).save(tmp_path / folder / f"{name}.png")
            if folder == "bad":
                Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    spec = f"folder:{tmp_path / 'good'},anomalous={tmp_path / 'bad'},masks={tmp_path / 'masks'}"
    capsys.readouterr()
    assert eval_main([str(run_dir), "--data", spec, "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    said = capsys.readouterr()
    assert re.search("adtf-eval: warning: " + message, said.err)
    assert re.search(message, (tmp_path / "ev" / "report.md").read_text())
    if fault == "all_empty":  # the summary said "no masks" of masks that were there and marked nothing
        assert re.search(r"pixel AUROC +n/a \(no mask marks a defect pixel\)", said.out)


def test_mask_notes_on_a_test_set_without_defects_and_name_the_inverted_example():
    """MTD's reader says it has masks before --skip-bad may drop every defect: the check once crashed there, after
    the whole fit."""
    from adtf.data import Sample
    from adtf.evaluate import _mask_notes

    assert _mask_notes(np.zeros(2, int), np.zeros((2, 8, 8)), [Sample("a.png", 0, "good")] * 2) == []
    masks = np.ones((3, 8, 8))
    masks[0, 4:] = 0  # half marked: a real defect's mask, unlike the other two
    samples = [Sample(f"{i}.png", 1, "crack", f"m{i}.png") for i in range(3)]
    note, = _mask_notes(np.ones(3, int), masks, samples)
    assert "are they inverted" in note and "e.g. m1.png" in note


def test_the_python_api_names_what_it_was_handed_instead_of_a_dataset(run_dir, tmp_path):
    """A spec string met AttributeError: 'str' object has no attribute 'test' inside evaluate, a pipeline or an array
    the same, a file where the report folder goes a FileExistsError after all the scoring; pipeline and split_off
    handed the whole dataset, TypeError: 'AnomalyDataset' object is not iterable."""
    from adtf import data
    from adtf.detectors import load
    from adtf.errors import AdtfError, DataError
    from adtf.evaluate import evaluate, score_parts

    detector = load(run_dir / "model.keras")
    results = evaluate(detector, "synthetic:grass", tmp_path / "from_spec", verbose=False)  # a spec is loaded
    assert results["image_auroc"] == json.loads((run_dir / "metrics.json").read_text())["image_auroc"]
    dataset = data.load("synthetic:grass")
    for given, said in [(data.pipeline(dataset.test, image_size=SIZE), "evaluate takes a dataset of adtf.data.load"),
                        (np.zeros((2, SIZE, SIZE, 3), "float32"), "not a ndarray")]:
        with pytest.raises(AdtfError, match=said):
            evaluate(detector, given, tmp_path / "x", verbose=False)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(AdtfError, match="a_file is a file: evaluate writes a folder"):
        evaluate(detector, dataset, tmp_path / "a_file", verbose=False)
    with pytest.raises(AdtfError, match="a_file is a file: score_parts writes a folder"):
        score_parts(detector, dataset, tmp_path / "a_file", verbose=False)
    for call, said in [(lambda: data.pipeline(dataset), "pipeline takes samples, dataset.train or dataset.test, not the whole"),
                       (lambda: data.pipeline("synthetic:grass"), r"read it with adtf.data.load\('synthetic:grass'\)"),
                       (lambda: data.pipeline(dataset.test, image_size="big"), "image_size is \\(height, width\\)"),
                       (lambda: data.split_off(dataset, 0.2), "split_off takes samples")]:
        with pytest.raises(DataError, match=said):
            call()
