"""Benchmarks of the visualization topic: notebook time, checks, classifier accuracy, pointing game,
and the time of one Grad-CAM map against pytorch-grad-cam (or a plain hook-based implementation)."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from common import REPO, bench_checks, bench_notebook, emit, timed

ORDER = 6  # the lecture's order of topics


def hook_based_grad_cam(model, target_layer, images, class_idx):
    """What a typical hook-based Grad-CAM does (pytorch-grad-cam's approach, without the package):
    a forward hook stores A, a tensor hook catches dS/dA during backward(), eval mode."""
    acts, grads = [], []

    def forward_hook(module, inputs, output):
        acts.append(output.detach())
        output.register_hook(lambda g: grads.append(g.detach()))

    model.eval()
    handle = target_layer.register_forward_hook(forward_hook)
    try:
        logits = model(images)
        model.zero_grad()
        logits.gather(1, class_idx[:, None]).sum().backward()
    finally:
        handle.remove()
    weights = grads[0].mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * acts[0]).sum(1))


def block_resolutions(model) -> dict[str, str]:
    """{"block1": "64x64", ...}: the output size of each conv block for a 64 x 64 image."""
    x, sizes = torch.zeros(1, 3, 64, 64), {}
    names = {id(block): name for name, block in model.blocks().items()}
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            if id(layer) in names:
                sizes[names[id(layer)]] = f"{x.shape[2]}x{x.shape[3]}"
    return sizes


_GRADCAM_TIMING = r"""
import json, statistics, sys, time
import torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from lecturelib import data, visualization as vis
from lecturelib.reference import grad_cam
model = vis.load_pretrained("classifier_shapes")
layer = list(model.blocks().values())[-1]
images, labels = vis.classification_data(data.make_classification(8, seed=1))
one, cls = images[:1], labels[:1]
cam = GradCAM(model=model, target_layers=[layer])
run = lambda: cam(input_tensor=one, targets=[ClassifierOutputTarget(int(cls[0]))])
theirs = run()
samples = []
for _ in range(51):
    start = time.perf_counter(); run(); samples.append(time.perf_counter() - start)
ours = vis.upsample_maps(grad_cam(model, layer, one, cls), 64).numpy()
print(json.dumps({"seconds": statistics.median(samples), "max_abs_difference": float(abs(ours - theirs).max()),
                  "version": __import__("importlib.metadata").metadata.version("grad-cam")}))
"""


def _pytorch_grad_cam_timing(threads: int) -> dict | None:
    """pytorch-grad-cam's GradCAM on the shipped model, timed in the interpreter named by
    $LECTURELIB_GRADCAM_PYTHON (a separate venv: `pip install grad-cam` pulls torchvision, which does not
    install beside torch 2.13 in .venv). None if that variable is unset or the run fails."""
    import json
    import os
    import subprocess

    python = os.environ.get("LECTURELIB_GRADCAM_PYTHON")
    if not python:
        return None
    proc = subprocess.run([python, "-c", _GRADCAM_TIMING, str(REPO), str(threads)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        emit(f"  (pytorch-grad-cam run in {python} failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> None:
    from lecturelib import data, visualization as vis
    from lecturelib.reference import grad_cam, occlusion_map, saliency_map

    emit("== visualization ==")
    bench_notebook(REPO / "notebooks" / "06_visualization" / "visualization.ipynb", 90)
    bench_checks("visualization")

    model = vis.load_pretrained("classifier_shapes")
    vit = vis.load_pretrained("vit_shapes")
    held_out = data.make_classification(1000, seed=1)
    images, labels = vis.classification_data(held_out)
    acc = vis.accuracy(model, held_out)
    emit(f"  classifier: held-out accuracy {acc:.2%} on 1000 images (seed 1) (target at least 97%); "
         f"tiny ViT {vis.accuracy(vit, held_out):.2%}")
    filters = vis.load_pretrained("filters_shapes")
    structure = vis.filter_structure(vis.first_layer_filters(filters))
    weight = tuple(vis.first_layer_filters(filters).shape)
    emit(f"  filters model (first layer {weight[2]} x {weight[3]}, stride 2): held-out accuracy "
         f"{vis.accuracy(filters, held_out):.2%}; first-layer filters: median smoothness "
         f"{float(structure['smoothness'].median()):.3f} (same taps shuffled {structure['shuffled_smoothness']:.3f}), "
         f"oriented {structure['oriented_share']:.0%} of {weight[0]} (random filters: 5%); trained in "
         f"{filters.metadata.get('train_seconds', '?')} s")

    blocks = model.blocks()
    sizes = block_resolutions(model)
    methods = {f"Grad-CAM {name} ({sizes[name]})": (lambda x, y, b=block: grad_cam(model, b, x, y))
               for name, block in blocks.items()}
    methods["saliency"] = lambda x, y: saliency_map(model, x, y)
    methods["occlusion patch 16 stride 8"] = lambda x, y: occlusion_map(model, x, y, 16, 8)
    methods["ViT attention rollout"] = lambda x, y: vis.attention_rollout(vit, x)
    center = torch.zeros(1, 64, 64)
    center[0, 32, 32] = 1
    methods["image centre (baseline)"] = lambda x, y: center.expand(len(x), -1, -1)
    results = vis.evaluate_pointing_game(methods, held_out)
    best = max((r["hit_rate"], name) for name, r in results.items() if name.startswith("Grad-CAM"))
    off_centre = int((~vis.centre_in_box(held_out)).sum())
    emit("  pointing game (maximum of the upsampled map inside the object's box), 1000 held-out images, true class;")
    emit(f"  'off-centre': only the {off_centre} images whose box does not contain the image centre")
    emit(f"    {'':30s} {'all':>6s} {'off-centre':>11s}")
    for name, r in results.items():
        emit(f"    {name:30s} {r['hit_rate']:6.1%} {r['off_centre']:11.1%}   "
             f"({r['seconds'] / len(images) * 1e3:.2f} ms/image)")
    emit(f"  best Grad-CAM layer: {best[1]} {best[0]:.1%} (target at least 90%)")

    one, cls = images[:1], labels[:1]
    last = list(blocks.values())[-1]
    # One thread for the single-map timings: a ~2 ms computation with two threads on a shared 2-core
    # machine measures mostly the other jobs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours = timed(lambda: grad_cam(model, last, one, cls), repeat=50)
        ours_shown = timed(lambda: vis.upsample_maps(grad_cam(model, last, one, cls), 64), repeat=50)
        hooks = timed(lambda: hook_based_grad_cam(model, last, one, cls), repeat=50)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    emit(f"  one Grad-CAM map (1 image, last block, 1 thread): reference {ours * 1e3:.2f} ms "
         f"({ours_shown * 1e3:.2f} ms with upsampling + normalising), plain hook-based Grad-CAM with backward() "
         f"{hooks * 1e3:.2f} ms, ratio {ours / hooks:.2f}x")
    other = _pytorch_grad_cam_timing(1)
    if other is None:
        emit("  pytorch-grad-cam: not measured (it pulls torchvision, which does not install beside torch 2.13 in "
             ".venv); set LECTURELIB_GRADCAM_PYTHON to a venv's python that has it to compare")
    else:
        emit(f"  pytorch-grad-cam {other['version']} GradCAM (upsamples + normalises too): "
             f"{other['seconds'] * 1e3:.2f} ms; ratio ours (with upsampling) / theirs "
             f"{ours_shown / other['seconds']:.2f}x; max |difference| of the normalised maps "
             f"{other['max_abs_difference']:.1e}")
    start = time.perf_counter()
    grad_cam(model, last, images[:100], labels[:100])
    emit(f"  batched: 100 maps in {(time.perf_counter() - start) * 1e3:.0f} ms")
