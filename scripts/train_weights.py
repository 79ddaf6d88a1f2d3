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
else lists the topics.
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parent
#: Topics with a recipe, in the lecture's order (notebooks/NN_<topic>/), which is also the order they must be
#: trained in: instance segmentation evaluates with DETR's weights.
TOPICS = tuple(p.name.split("_", 1)[-1] for p in sorted((SCRIPTS.parent / "notebooks").iterdir())
               if (SCRIPTS / f"train_{p.name.split('_', 1)[-1]}.py").exists())


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
