"""`clf report` of multi-label models end to end: a tiny `--task multilabel` run evaluated with --images and
--labels-csv (the per-class table equals serve's evaluate_tags on the same images, with the model's thresholds; the
gallery holds the worst images with a tag wrong, missed and wrong tags marked in words, and the worst wrong tag's
Grad-CAM), its .onnx, a multi-label fold group (group.json's thresholds and CV), a hostile tag name, bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser_helpers import CHROMIUM, NO_CHROMIUM, chromium, page_problems
from cli_helpers import clf, error_line

from clf.config import EvalConfig
from clf.serve.evaluate import load_eval_data
from clf.serve.evaluate_multilabel import evaluate_tags, predict_tags
from clf.serve.loading import make_predictor

HOSTILE_TAG = "<script>alert(3)</script>"  # a tag is a class name: data, never markup
CLASSES = ["blue", "green", HOSTILE_TAG]  # the hostile tag is the red patch
TINY = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet",
        "--seed", "0", "--ema", "0", "--task", "multilabel", "--id-col", "id", "--label-col", "tags"]
MAX_IMAGES = 3


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> tuple[Path, Path]:
    """30 images of 32 px, each a bright patch in the colour channel of each of its 1-3 tags; the tags CSV."""
    root = tmp_path_factory.mktemp("report_tags")
    rng = np.random.default_rng(0)
    rows = []
    for index in range(30):
        held = rng.random(len(CLASSES)) < 0.5
        held[index % len(CLASSES)] = True
        image = rng.normal(50, 15, (32, 32, 3))
        for c in np.flatnonzero(held):
            image[8:24, 8:24, c] += 150  # BGR: blue, green, red
        cv2.imwrite(str(root / f"img_{index:02d}.png"), np.clip(image, 0, 255).astype(np.uint8))
        rows.append(f"img_{index:02d},{' '.join(CLASSES[c] for c in np.flatnonzero(held))}\n")
    csv = root.parent / f"{root.name}.csv"
    csv.write_text("id,tags\n" + "".join(rows))
    return root, csv


@pytest.fixture(scope="module")
def runs(tagged, tmp_path_factory) -> Path:
    """runs/ml (2 epochs, exported to runs/ml/model.onnx) and runs/g (a 2-fold group, 1 epoch)."""
    images, csv = tagged
    out = tmp_path_factory.mktemp("report_ml_runs")
    for name, extra in (("ml", ["--epochs", "2"]), ("g", ["--epochs", "1", "--folds", "2"])):
        result = clf("train", images, "--labels-csv", csv, *TINY, *extra, "--out", out, "--name", name)
        assert result.exit_code == 0, result.output
    result = clf("export", out / "ml", "--onnx", "--exporter", "torchscript", "--batch-sizes", "1,2")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def served(runs, tagged) -> dict:
    """serve's evaluate_tags of the exported model on the tagged images, and how many images have a tag wrong."""
    images, csv = tagged
    cfg = EvalConfig(labelled=str(images), model=str(runs / "ml" / "model.onnx"), device="cpu", labels_csv=str(csv),
                     label_col="tags", task="multilabel")
    data, predictor = load_eval_data(cfg), make_predictor(cfg)
    result, truth = predict_tags(predictor, data.paths, data.tags)
    wrong = int((predictor.task.decide(result.logits) != truth).any(axis=1).sum())
    return {"report": evaluate_tags(predictor, data.paths, data.tags), "wrong": wrong}


def parse_strictly(html: str):
    """The document through html5lib's strict parser (as test_report.py): any parse error raises."""
    import html5lib

    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)


def report_of(path: Path, tagged: tuple[Path, Path], out: Path, *extra: str):
    images, csv = tagged
    result = clf("report", path, "--images", images, "--labels-csv", csv, "--label-col", "tags", *extra, "-o", out)
    assert result.exit_code == 0, result.output
    return result, out.read_text()


def table_rows(tree, xpath: str) -> list[list[str]]:
    return [["".join(cell.itertext()) for cell in row] for row in tree.find(xpath).find("tbody")]


@pytest.fixture(scope="module")
def ml_report(runs, tagged, tmp_path_factory) -> tuple[str, Path]:
    """The report of runs/ml on the tagged images, at most MAX_IMAGES in the gallery: clf's output and the file."""
    out = tmp_path_factory.mktemp("report_ml") / "ml.html"
    result, _ = report_of(runs / "ml", tagged, out, "--max-images", str(MAX_IMAGES))
    return result.output, out


def test_a_multilabel_run_gets_the_per_class_table_of_evaluate_tags_and_its_worst_images(ml_report, served):
    output, page = ml_report
    html = page.read_text()
    expected = served["report"]
    assert f"{min(MAX_IMAGES, served['wrong'])} mistakes shown" in " ".join(output.split())
    tree = parse_strictly(html)
    rows = table_rows(tree, ".//table[@id='per-class']")
    classes = list(expected["per_class"])
    assert [row[0] for row in rows] == classes and set(classes) == set(CLASSES)
    for row, threshold, stats in zip(rows, expected["thresholds"], expected["per_class"].values()):
        numbers = [float(cell) for cell in row[1:5] + row[6:8]]
        assert numbers == pytest.approx([threshold, stats["precision"], stats["recall"], stats["f1"],
                                         stats["average_precision"], stats["auc"]], abs=6e-5)
        assert int(row[5]) == stats["support"]
    assert any(abs(t - 0.5) > 1e-3 for t in expected["thresholds"])  # the run's tuned thresholds, not a default
    summary = " ".join("".join(tree.find(".//p[@id='multilabel-summary']").itertext()).split())
    for name, key in (("Exact match", "exact_match"), ("F1 micro", "f1_micro"), ("macro", "f1_macro"),
                      ("samples", "f1_samples"), ("mAP", "map")):
        assert f"{name} {expected[key]:.4f}" in summary
    assert f"on {expected['num_samples']} images" in summary

    cards = tree.findall(".//figure[@class='mistake']")
    heading = tree.find(".//section[@id='evaluation']/h3").text
    assert heading.startswith(f"Worst images ({len(cards)} of {served['wrong']} with a tag wrong")
    assert len(cards) == min(MAX_IMAGES, served["wrong"]) > 0
    losses = [float(re.search(r"loss (\d+\.\d+)", "".join(card.itertext())).group(1)) for card in cards]
    assert losses == sorted(losses, reverse=True)
    for card in cards:
        text = " ".join("".join(card.itertext()).split())
        marked = [span.text for span in card.iter("span") if span.get("class") in ("missed", "wrong")]
        assert marked and all(name.endswith((" (missed)", " (wrong)")) for name in marked)  # words, not colour only
        assert len(card.findall("img")) == 2  # the thumbnail and the worst wrong tag's Grad-CAM (own cnn)
        cam_tag, kind = re.search(r"Grad-CAM: (.+?) \((missed|wrong)\)", text).groups()
        assert f"{cam_tag} ({kind})" in marked
        bars = [" ".join("".join(em.itertext()).split()) for em in card.iter("em")]
        assert len(bars) == len(CLASSES)
        for bar in bars:  # each probability with its threshold from the model
            name = re.match(r"(.+) \d+\.\d% \(threshold (\d+\.\d)%\)$", bar).group(1)
            threshold = float(re.search(r"threshold (\d+\.\d)%", bar).group(1))
            assert threshold == pytest.approx(100 * expected["thresholds"][classes.index(name)], abs=0.051)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_multilabel_report_renders_in_headless_chromium(ml_report, served, tmp_path):
    _, page = ml_report
    dom = chromium(page, tmp_path / "ud", "--dump-dom")
    assert not page_problems(dom.stderr), page_problems(dom.stderr)
    assert len(re.findall(r'<figure class="mistake">', dom.stdout)) == min(MAX_IMAGES, served["wrong"])
    assert "alert(" not in "".join(re.findall(r"<script>.*?</script>", dom.stdout, re.S))  # the tag stayed text


def test_the_exported_model_shows_every_wrong_image_without_grad_cam_and_escapes_the_tag(runs, tagged, served,
                                                                                        tmp_path):
    _, html = report_of(runs / "ml" / "model.onnx", tagged, tmp_path / "onnx.html")
    tree = parse_strictly(html)
    cards = tree.findall(".//figure[@class='mistake']")
    assert len(cards) == served["wrong"]  # --max-images (48) is more than the images with a tag wrong
    assert all(len(card.findall("img")) == 1 for card in cards)
    assert "no Grad-CAM: an .onnx holds no gradients to trace" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # the table sorter, nothing else


def test_a_multilabel_fold_group_shows_its_folds_cv_and_thresholds(runs, tmp_path):
    out = tmp_path / "g.html"
    assert clf("report", runs / "g", "-o", out).exit_code == 0
    record = json.loads((runs / "g" / "group.json").read_text())
    tree = parse_strictly(out.read_text())
    group = tree.find(".//section[@class='group']")
    assert [row[0] for row in table_rows(group, ".//table[@class='sortable']")] == ["fold-0", "fold-1"]
    text = " ".join("".join(group.itertext()).split())
    cv = record["cv"]
    assert f"CV val exact match {cv['mean_val_acc']:.4f} ± {cv['std_val_acc']:.4f}" in text
    assert (f"OOF {cv['metric']} {cv['oof_metric']:.4f} at thresholds 0.5, {cv['oof_metric_tuned']:.4f} at the tuned "
            "thresholds") in text
    rows = table_rows(group, ".//table[@class='sortable oof-tags']")
    assert [row[0] for row in rows] == record["classes"]
    assert [float(row[1]) for row in rows] == pytest.approx(record["thresholds"], abs=6e-5)
    if cv["metric"] == "f1_macro":  # the per-class F1s at group.json's thresholds average to its tuned metric
        assert np.mean([float(row[4]) for row in rows]) == pytest.approx(cv["oof_metric_tuned"], abs=1e-4)


def test_bad_multilabel_inputs_get_one_line_and_exit_2(runs, tagged, served, tmp_path):
    images, csv = tagged
    out = tmp_path / "r.html"
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("id,tags\nimg_00,zebra\n")
    model = runs / "ml" / "model.onnx"
    needs = ("a multi-label model: its images' tags come from a CSV; add --labels-csv TAGS.csv (an id column and a "
             "column of space-separated tags; --id-col and --label-col name them)")
    cases = {
        (runs / "ml", "--images", images): f"{runs / 'ml'}: {needs}",
        (model, "--images", images): f"{model}: {needs}",
        (runs / "ml", "--labels-csv", csv): "--labels-csv labels the images of --images; add --images DIR or leave "
                                            "out --labels-csv",
        (model, "--images", images, "--labels-csv", csv): f"{csv}: no column 'label' (columns: id, tags); name it "
                                                          "with --label-col",
        (model, "--images", images, "--labels-csv", unknown, "--label-col", "tags"):
            f"tags ['zebra'] are not classes of the model ({', '.join(served['report']['per_class'])}); wrong "
            "model or data?",
        (model, "--images", images, "--labels-csv", csv, "--label-col", "id"): "--id-col and --label-col are both "
                                                                             "'id'; give two column names",
    }
    for args, message in cases.items():
        result = clf("report", *args, "-o", out)
        assert result.exit_code == 2, (args, result.output)
        assert error_line(result) == f"error: {message}"
    assert not out.exists()
