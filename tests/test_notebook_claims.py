"""Printed numbers agree with the sentences around them (issue 14, "Outputs that contradict their text").

Each notebook is executed once (module-scoped fixture); each test reads the executed output of one cell and
asserts the sign or order its text claims, so that retrained weights cannot silently contradict the text.
Claims that are pure text are pinned by the corrected sentence being present and the wrong one gone.
"""
import math
import re

import pytest

from notebook_tools import REPO, errors, execute, text

pytestmark = pytest.mark.slow

NB = REPO / "notebooks"


def _run(path):
    nb = execute(path)
    assert errors(nb) == [], errors(nb)
    return nb


@pytest.fixture(scope="module")
def segmentation_nb():
    return _run(NB / "02_segmentation" / "segmentation.ipynb")


@pytest.fixture(scope="module")
def detection_nb():
    return _run(NB / "03_detection" / "detection.ipynb")


@pytest.fixture(scope="module")
def detr_nb():
    return _run(NB / "04_detr" / "detr.ipynb")


@pytest.fixture(scope="module")
def instance_nb():
    return _run(NB / "05_instance_segmentation" / "instance_segmentation.ipynb")


@pytest.fixture(scope="module")
def visualization_nb():
    return _run(NB / "06_visualization" / "visualization.ipynb")


def cell(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def source(nb) -> str:
    """All markdown of a notebook, with line breaks folded to spaces (sentences wrap anywhere)."""
    return " ".join(" ".join(c.source.split()) for c in nb.cells if c.cell_type == "markdown")


def stdout(c) -> str:
    """What a code cell printed (not its stderr: progress bars)."""
    return "".join(o["text"] for o in c.get("outputs", []) if o.get("output_type") == "stream" and o["name"] == "stdout")


def numbers(line: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*", line)]


# --- item 1 (05): merges and fragments counted separately ---------------------------------------------------
def test_semantic_regions_count_merges_and_fragments_separately(instance_nb):
    out = text(cell(instance_nb, "fc060825"))
    assert "lose -" not in out
    lines = out.strip().splitlines()
    total, images, regions = numbers(lines[0])[:3]
    merged, lost = numbers(lines[1])[0], numbers(lines[1])[1]
    fragmented, extra = numbers(lines[2])[:2]
    assert total > 0 and images > 0
    assert merged >= 0 and lost >= 0 and fragmented >= 0 and extra >= 0
    assert (merged == lost == 0) or lost < merged   # a region holding k > 1 objects loses k - 1 of them
    assert extra >= fragmented
    assert regions == total - lost + extra          # the printed identity holds
    text_ = source(instance_nb)
    assert "undercounts the objects" not in text_
    assert "Counting connected regions counts neither the objects nor the merges" in text_
    if fragmented:                                   # the sentence about occluders is backed by the count
        assert "when an occluder cuts an object in two" in text_


# --- item 2 (06): the fresh model starts at chance ---------------------------------------------------------
def test_fresh_model_loss_is_not_above_chance(visualization_nb):
    out = stdout(cell(visualization_nb, "fb71b91d"))
    line = next(l for l in out.splitlines() if l.startswith("fresh model"))
    start, mean = re.search(r"loss (\d+\.\d+) before training, mean training loss (\d+\.\d+)", line).groups()
    assert float(start) <= math.log(4) + 0.01
    assert abs(float(mean) - math.log(4)) <= 0.1     # "leaves it at chance"
    accuracy = float(re.search(r"training accuracy after it (\d+)%", line).group(1))
    assert accuracy <= 40
    text_ = source(visualization_nb)
    assert "its loss is exactly chance" in text_ and "One epoch on 1,000 images leaves it at chance" in text_


# --- item 3 (06): the sanity-check text follows the correlations --------------------------------------------
def test_sanity_check_text_follows_correlations(visualization_nb):
    out = text(cell(visualization_nb, "7c4abd57"))
    corr = {name: float(value) for name, value in
            re.findall(r"^(.+?)\s+rank correlation trained vs random: (-?\d+\.\d+)", out, flags=re.M)}
    gradcam, saliency, guided = corr["Grad-CAM block5"], corr["saliency"], corr["guided backprop"]
    assert abs(gradcam) < 0.1                        # "Grad-CAM's map decorrelates (near 0)"
    assert saliency > 0.1 and guided > 0.1           # "both keep a clearly positive correlation"
    assert guided <= saliency + 0.05                 # "does not fail more than plain saliency here"
    text_ = source(visualization_nb)
    assert "classic failure" not in text_
    assert "Guided backprop does not fail more than plain saliency here" in text_


# --- item 4 (02): the conv-as-matrix example is stated as it is computed -----------------------------------
def test_conv_matrix_example_is_not_attributed_to_the_lecture(segmentation_nb):
    text_ = source(segmentation_nb)
    assert "The lecture's example: a 3 x 3 kernel, stride 1, on a 4 x 4 input" not in text_
    assert "a 3 x 3 kernel, stride 1, **no padding**, on a 4 x 4 input gives a 2 x 2 output" in text_
    out = text(cell(segmentation_nb, "9691a178"))
    assert "(4, 16)" in out                          # C is 4 x 16, as the sentence says


# --- item 5 (04): who fits o2 --------------------------------------------------------------------------------
def test_greedy_example_says_who_fits_o2(detr_nb):
    text_ = source(detr_nb)
    assert "the only prediction that fits it" not in text_
    assert "the only object that `p2` fits (its other costs are 7 and 8)" in text_
    assert "`p0`, which fits `o2` even better (cost 1)" in text_
    out = text(cell(detr_nb, "8918c49c"))
    rows = [numbers(l) for l in out.split("greedy")[0].replace("[", " ").replace("]", " ").splitlines()[1:] if l.strip()]
    assert rows[2] == [7.0, 8.0, 2.0] and rows[0][2] == 1.0 and min(rows[2]) == rows[2][2]
    assert rows[0][2] < rows[2][2]


# --- item 6 (04): no-object weight 0.1 gives a larger (mean) loss, as explained -----------------------------
def test_no_object_weight_order_matches_explanation(detr_nb):
    out = text(cell(detr_nb, "b7365345"))
    parts = {float(w): dict((k, float(v)) for k, v in re.findall(r"(\w+) (\d+\.\d+)", rest))
             for w, rest in re.findall(r"no-object weight (\d\.\d): (.*)", out)}
    assert parts[0.1]["class"] > parts[1.0]["class"] and parts[0.1]["loss"] > parts[1.0]["loss"]
    matched, queries = map(int, re.search(r"(\d+) of (\d+) queries are matched", out).groups())
    # The explanation: a weighted mean, and matched queries cost more on average than "no object" ones.
    unmatched = queries - matched
    sum_all = parts[1.0]["class"] * queries                                  # S_m + S_u
    sum_down = parts[0.1]["class"] * (matched + 0.1 * unmatched)             # S_m + 0.1 S_u
    s_u = (sum_all - sum_down) / 0.9
    s_m = sum_all - s_u
    assert s_m / matched > s_u / unmatched
    text_ = source(detr_nb)
    assert "the class term is a weighted **mean**" in text_
    assert "**larger** with weight 0.1 than with 1.0" in text_


# --- item 7 (05): more masks than objects, explained and counted --------------------------------------------
def test_threshold_explorer_counts_duplicates(instance_nb):
    out = text(cell(instance_nb, "60cac0ac"))
    m = re.search(r"(\d+) objects, (\d+) masks; (\d+) duplicates .*score threshold of 0\.7: (\d+) masks", out)
    objects, masks, duplicates, thresholded = map(int, m.groups())
    assert masks - objects <= duplicates            # every extra mask is a duplicate
    assert thresholded == objects                    # "a score threshold of 0.7 removes them here"
    dup_scores = [float(x) for x in re.search(r"duplicates \(scores ([^)]*)\)", out).group(1).split(", ")
                  if x != "-"]
    assert all(s < 0.7 for s in dup_scores)
    assert "**More masks than objects?**" in source(instance_nb)


# --- item 8 (03): training time agrees with the README and the weights' metadata ---------------------------
def test_detector_training_time_matches_readme(detection_nb):
    from lecturelib import detection
    text_ = source(detection_nb)
    assert "under a minute on a laptop CPU" not in text_
    seconds = detection.load_pretrained().metadata["train_seconds"]
    assert f"({seconds} s for the shipped weights)" in text_
    assert 180 <= seconds <= 480                     # "about five minutes"
    assert f"`python scripts/train_weights.py detection`, {seconds} s" in (REPO / "README.md").read_text()


# --- item 9 (06): the model is summarised, not dumped -------------------------------------------------------
def test_model_summary_is_short(visualization_nb):
    out = stdout(cell(visualization_nb, "fb71b91d"))
    assert "(features): Sequential(" not in out
    lines = [l for l in out.splitlines() if l.strip() and not l.startswith(("fresh model", "shipped model"))]
    assert 1 <= len(lines) <= 8, lines
    assert "conv blocks" in out and "parameters" in out
