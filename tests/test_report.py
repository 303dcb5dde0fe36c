"""`clf report` end to end on tiny runs: a folder of runs with a fold group, a run and an exported model evaluated on
labelled images (one class folder and one file named like HTML), the file opened in headless Chromium, bad inputs."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser_helpers import CHROMIUM, NO_CHROMIUM, chromium, page_problems
from cli_helpers import clf, error_line
from train_helpers import make_data, resume, train

from clf.report.document import GENERATOR

HOSTILE_CLASS = "<script>alert(1)"  # a class folder name: data, never markup
HOSTILE_FILE = "<img src=x onerror=alert(2)>.png"
TINY_CLI = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet",
            "--seed", "0", "--ema", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4 classes x 6 images; the star class folder renamed to a script tag, one of its files to an img tag."""
    root = make_data(tmp_path_factory.mktemp("report_data"), n_per_class=6)
    hostile = root / HOSTILE_CLASS
    (root / "star").rename(hostile)
    first = sorted(hostile.iterdir())[0]
    first.rename(hostile / HOSTILE_FILE.replace(".png", first.suffix))
    return root


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> Path:
    """runs/a (1 epoch, resumed for a second: two sittings), runs/b (1 epoch), runs/g (a 3-fold group, 1 epoch)."""
    out = tmp_path_factory.mktemp("report_runs")
    train(data, out, "a", epochs=1)
    resume(out / "a", epochs=2)
    train(data, out, "b", epochs=1, lr=0.01)
    result = clf("train", data, *TINY_CLI, "--epochs", "1", "--folds", "3", "--out", out, "--name", "g")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def evaluated(runs, data, tmp_path_factory) -> Path:
    """The report of run a on the labelled images, at most 5 mistakes."""
    out = tmp_path_factory.mktemp("report_eval") / "eval.html"
    result = clf("report", runs / "a", "--images", data, "--max-images", "5", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def parse_strictly(html: str):
    """The document through html5lib's strict parser: any parse error (bad nesting, stray tag) raises."""
    import html5lib

    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)


def image_sources(html: str) -> list[str]:
    return [img.get("src") for img in parse_strictly(html).iter("img")]


def test_a_folder_of_runs_gets_the_runs_table_curves_and_the_fold_group(runs, tmp_path):
    out = tmp_path / "runs.html"
    result = clf("report", runs, "-o", out)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"{re.escape(str(out))}: \d+\.\d\d MB, 2 run\(s\), 1 fold group\(s\) \(\d+\.\d s\)",
                        " ".join(result.output.split()))
    html = out.read_text()
    assert GENERATOR in html
    tree = parse_strictly(html)
    table = tree.find(".//table[@id='runs-table']")
    rows = [[cell.text for cell in row] for row in table.find("tbody")]
    assert [row[0] for row in rows] == ["a", "b"]
    assert [(row[2], row[8]) for row in rows] == [("2", "2"), ("1", "1")]  # epochs, sittings: a was resumed once
    assert "lr 0.01," in rows[1][9] and "lr 0.003," in rows[0][9]  # the recipe tells the runs apart
    group = tree.find(".//section[@class='group']")
    assert group.find("h2").text == "Fold group g"
    assert [row[0].text for row in group.find(".//tbody")] == ["fold-0", "fold-1", "fold-2"]
    assert re.search(r"CV val acc \d\.\d{4} ± \d\.\d{4}, OOF acc \d\.\d{4}, OOF log-loss \d\.\d{4}",
                     " ".join("".join(group.itertext()).split()))
    assert group.find(".//img[@alt='out-of-fold confusion matrix']") is not None
    assert all(src.startswith("data:image/") for src in image_sources(html))
    assert "Augmentation of" in html  # the first PATH's recorded pipeline


def test_a_run_evaluated_on_images_shows_its_worst_mistakes_with_grad_cam(evaluated):
    html = evaluated.read_text()
    tree = parse_strictly(html)
    cards = tree.findall(".//figure[@class='mistake']")
    heading = tree.find(".//section[@id='evaluation']/h3[last()]").text
    shown, total = map(int, re.match(r"Worst mistakes \((\d+) of (\d+),", heading).groups())
    assert shown == len(cards) == min(5, total) and total > 0
    losses = [float(re.search(r"loss (\d+\.\d+)", "".join(card.itertext())).group(1)) for card in cards]
    assert losses == sorted(losses, reverse=True)  # the worst first
    assert all(len(card.findall("img")) == 2 for card in cards)  # the thumbnail and its Grad-CAM (own cnn)
    assert all(len(card.findall(".//div[@class='bar']") + card.findall(".//div[@class='bar true']")) == 3
               for card in cards)  # the top-3 bar
    per_class = [row[0].text for row in tree.find(".//table[@id='per-class']/tbody")]
    assert per_class == sorted(["circle", "square", "triangle", HOSTILE_CLASS])
    assert all(src.startswith("data:image/") for src in image_sources(html))
    for card in cards:  # thumbnails resized and compressed: a gallery stays small
        assert all(img.get("src").startswith("data:image/jpeg") and len(img.get("src")) < 12_000
                   for img in card.findall("img"))


def test_class_and_file_names_are_escaped(evaluated):
    html = evaluated.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)" in html
    assert html.count("<script>") == 1  # the table sorter, nothing else


def test_an_exported_model_needs_images_and_says_it_has_no_grad_cam(runs, data, tmp_path):
    model = tmp_path / "model.onnx"
    result = clf("export", runs / "b", "--onnx", "--output", model, "--calibrate")
    assert result.exit_code == 0, result.output
    assert error_line(clf("report", model, "-o", tmp_path / "r.html")) == (
        f"error: {model}: an exported model is reported by evaluating it: add --images DIR (labelled images in class "
        "folders, or with --labels-csv)")
    result = clf("report", model, "--images", data, "-o", tmp_path / "r.html", "--max-images", "2")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert "no Grad-CAM: an .onnx holds no gradients to trace" in html
    assert re.search(r"before temperature \S+: ECE \d\.\d{4}; after temperature \S+: ECE \d\.\d{4}", html)
    assert "Runs</h2>" not in html and "Augmentation of" not in html  # nothing but the model was given
    flat, labels = flat_copy(data, tmp_path / "flat")  # the same images labelled by a CSV (as `clf eval`'s)
    result = clf("report", model, "--images", flat, "--labels-csv", labels, "-o", tmp_path / "csv.html",
                 "--max-images", "2")
    assert result.exit_code == 0, result.output
    accuracy = re.compile(r"Accuracy <strong>\d\.\d{4}</strong> on \d+ images")
    assert accuracy.search((tmp_path / "csv.html").read_text()).group() == accuracy.search(html).group()


def flat_copy(data: Path, folder: Path) -> tuple[Path, Path]:
    """Every image of the class folders in one folder, and the CSV (id = file stem, label = class) naming them."""
    folder.mkdir()
    rows = []
    for image in sorted(data.glob("*/*")):
        shutil.copy(image, folder / image.name)
        rows.append((image.stem, image.parent.name))
    labels = folder.parent / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "label"), *rows])
    return folder, labels


def test_a_report_of_several_runs_and_a_full_gallery_stays_small(runs, data, tmp_path):
    out = tmp_path / "big.html"
    result = clf("report", runs / "a", "--images", data, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < 1_000_000  # 18 mistakes x 2 thumbnails, curves, confusion, reliability, preview
    assert clf("report", runs, runs / "a", runs / "b", "-o", out).exit_code == 0  # clf's own report: replaced
    assert out.stat().st_size < 600_000


def test_bad_inputs_get_one_line_and_exit_2(runs, data, tmp_path):
    out = tmp_path / "r.html"
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes.txt").write_text("x")
    cases = {
        (tmp_path / "missing",): f"{tmp_path / 'missing'}: no such file or folder; give a run folder, a fold group, "
                                 "a folder of runs or an exported .onnx",
        (empty,): f"{empty}: not a run folder, a fold group, a folder of runs or an exported .onnx (no config.json or "
                  "group.json in it or its sub-folders)",
        (tmp_path / "notes.txt",): f"{tmp_path / 'notes.txt'}: not a run folder, a fold group, a folder of runs or "
                                   "an exported .onnx",
        (runs / "a", runs / "b", "--images", data): "--images evaluates one model: give one run folder or .onnx as "
                                                     "PATH (got 2 model(s))",
        (runs / "g", "--images", data): "--images evaluates one model: give one run folder or .onnx as PATH (got 0 "
                                        "model(s) and a fold group)",
        (runs / "a", "--images", tmp_path / "nope"): f"{tmp_path / 'nope'}: --images is not a folder; give labelled "
                                                     "images in class folders (or tagged by --labels-csv)",
        (runs / "a", "--max-images", "0"): "--max-images must be 1..1000, got 0",
    }
    for args, message in cases.items():
        result = clf("report", *args, "-o", out)
        assert result.exit_code == 2, (args, result.output)
        assert error_line(result) == f"error: {message}"
    assert not out.exists()
    mine = tmp_path / "mine.html"
    mine.write_text("<html>someone's page</html>")
    assert error_line(clf("report", runs / "a", "-o", mine)) == (
        f"error: {mine}: exists and is not a report clf wrote; clf replaces only its own reports: choose another -o "
        "or remove the file")
    assert mine.read_text() == "<html>someone's page</html>"


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_report_renders_in_headless_chromium(evaluated, tmp_path):
    """Opened from disk: no console error, no request that failed (every image inline), the gallery's cards in the
    rendered DOM, and a screenshot that is not blank."""
    shot = tmp_path / "report.png"
    dom = chromium(evaluated, tmp_path / "ud", "--dump-dom")
    shot_run = chromium(evaluated, tmp_path / "ud", f"--screenshot={shot}")
    for log in (dom.stderr, shot_run.stderr):
        assert not page_problems(log), page_problems(log)
    cards = re.findall(r'<figure class="mistake">', dom.stdout)
    expected = re.search(r"Worst mistakes \((\d+) of", evaluated.read_text()).group(1)
    assert len(cards) == int(expected) > 0
    sources = re.findall(r'<img[^>]* src="([^"]*)"', dom.stdout)
    assert sources and all(src.startswith("data:image/") for src in sources)
    links = re.findall(r'\b(?:src|href)="([^"]*)"', dom.stdout)  # nothing to fetch: no file beside it, no network
    assert all(link.startswith("data:") for link in links), [link[:40] for link in links]
    assert "alert(" not in "".join(re.findall(r"<script>.*?</script>", dom.stdout, re.S))  # only the table sorter
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1600, 1200)
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 500  # text, plots, thumbnails
