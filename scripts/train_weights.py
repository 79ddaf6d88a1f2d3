"""Retrain the weights shipped in lecturelib/weights/, deterministically (``make weights``).

    python scripts/train_weights.py                          # every topic, in this order (make weights)
    python scripts/train_weights.py detection detr           # some topics
    python scripts/train_weights.py detr --epochs 3 --dry-run   # one topic with its own options: train, evaluate,
                                                             # write nothing

Each topic's recipe is ``scripts/train_<topic>.py``: ``add_arguments(parser)`` (its options, whose defaults
made the shipped weights), ``THREADS`` (the torch thread count they were made with: the result depends on
it) and ``train(args)``, which trains on ``make_shapes(..., seed=0)`` (or ``make_classification``), evaluates
on held-out data (``seed=1``), prints the scores and writes the weights with ``save_weights``, recording the
command, seed, recipe and scores in the file's metadata. A topic with such a script is trained; nothing
else lists the topics. A second model of a topic has its own recipe ``scripts/train_<name>.py`` with a line
``TOPIC = "<topic>"`` naming the notebook it belongs to (``train_keypoints.py``: ``TOPIC = "instance_segmentation"``);
it is trained right after its topic's own recipe and chosen by its name (``make weights TOPIC=keypoints``).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parent
_NOTEBOOK_TOPICS = [p.name.split("_", 1)[-1] for p in sorted((SCRIPTS.parent / "notebooks").iterdir()) if p.is_dir()]


def _recipe_topic(path: Path) -> str | None:
    """The notebook topic a recipe belongs to: its own name, or its ``TOPIC = "..."`` line."""
    name = path.stem.removeprefix("train_")
    if name in _NOTEBOOK_TOPICS:
        return name
    found = re.search(r'^TOPIC = "(\w+)"', path.read_text(), re.MULTILINE)
    return found.group(1) if found and found.group(1) in _NOTEBOOK_TOPICS else None


def _recipes() -> tuple[str, ...]:
    """Recipe names in the lecture's order of their topics (notebooks/NN_<topic>/), a topic's own recipe first."""
    found = {p.stem.removeprefix("train_"): _recipe_topic(p) for p in SCRIPTS.glob("train_*.py")
             if p.name != "train_weights.py"}
    ordered = [(_NOTEBOOK_TOPICS.index(topic), name != topic, name) for name, topic in found.items() if topic]
    return tuple(name for *_, name in sorted(ordered))


#: Recipes (topics, and second models named after what they predict), in the lecture's order, which is also the
#: order they must be trained in: instance segmentation and keypoints evaluate with DETR's weights.
TOPICS = _recipes()


def topic_recipe(topic: str):
    """The module ``scripts/train_<topic>.py`` (loaded by path: scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"train_{topic}", SCRIPTS / f"train_{topic}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    """Train the chosen topics; returns {topic: what its ``train`` returned (the held-out scores)}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Topic options (e.g. --epochs) are listed in scripts/train_<topic>.py.")
    parser.add_argument("topics", nargs="*", metavar="topic", help=f"any of {', '.join(TOPICS)} (default: all)")
    parser.add_argument("--threads", type=int, help="torch threads (default: each topic's THREADS, as shipped)")
    parser.add_argument("--dry-run", action="store_true", help="train and evaluate, write nothing")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")
    args, topic_options = parser.parse_known_args(argv)
    unknown = [t for t in args.topics if t not in TOPICS]
    if unknown:
        parser.error(f"unknown topic(s) {', '.join(unknown)}; choose from {', '.join(TOPICS)}")
    topics = [t for t in TOPICS if t in args.topics] if args.topics else list(TOPICS)
    if topic_options and len(topics) != 1:
        parser.error(f"topic options {' '.join(topic_options)} need exactly one topic")
    scores = {}
    for topic in topics:
        recipe = topic_recipe(topic)
        topic_parser = argparse.ArgumentParser(prog=f"train_weights.py {topic}")
        recipe.add_arguments(topic_parser)
        topic_args = topic_parser.parse_args(topic_options)
        threads = args.threads or recipe.THREADS
        torch.set_num_threads(threads)
        topic_args.threads, topic_args.progress, topic_args.dry_run = threads, args.progress, args.dry_run
        topic_args.command = shlex.join(["python", "scripts/train_weights.py", topic, *topic_options]
                                        + (["--threads", str(args.threads)] if args.threads else []))
        scores[topic] = recipe.train(topic_args)
    return scores


if __name__ == "__main__":
    main()
