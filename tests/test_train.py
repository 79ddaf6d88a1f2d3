"""Tests of the shared training utilities (lecturelib.train)."""
import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from lecturelib.train import (default_device, fit, load_weights, read_metadata, save_weights,
                              seed_everything, to_device)


def _toy_problem(n=256, seed=0):
    """A linearly separable 2-class problem in 2-d."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return torch.utils.data.TensorDataset(x, y)


def _loader(dataset, seed=0):
    return torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def test_default_device():
    device = default_device()
    assert isinstance(device, torch.device)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_seed_everything_makes_torch_and_numpy_repeatable():
    seed_everything(3)
    a = torch.rand(3), np.random.rand(3)
    seed_everything(3)
    b = torch.rand(3), np.random.rand(3)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    seed_everything(4)
    assert not torch.equal(a[0], torch.rand(3))
    with pytest.raises(TypeError, match="seed"):
        seed_everything(1.5)


def test_to_device_nested():
    batch = (torch.zeros(2), [{"boxes": torch.ones(1, 4), "name": "x"}])
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved, tuple) and isinstance(moved[1], list)
    assert torch.equal(moved[1][0]["boxes"], torch.ones(1, 4)) and moved[1][0]["name"] == "x"


@pytest.mark.parametrize("optimizer, schedule", [("adamw", "onecycle"), ("sgd", "cosine"),
                                                 ("adam", "constant")])
def test_fit_reduces_loss(optimizer, schedule):
    seed_everything(0)
    model = nn.Linear(2, 2)
    losses = fit(model, _loader(_toy_problem()), nn.functional.cross_entropy, epochs=8, lr=0.05,
                 optimizer=optimizer, schedule=schedule, progress=False)
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0]
    x, y = _toy_problem(seed=1).tensors
    accuracy = (model(x).argmax(1) == y).float().mean()
    assert accuracy > 0.9


def test_fit_is_deterministic():
    runs = []
    for _ in range(2):
        seed_everything(0)
        model = nn.Linear(2, 2)
        losses = fit(model, _loader(_toy_problem()), nn.functional.cross_entropy, epochs=2, lr=0.05,
                     progress=False)
        runs.append((losses, model.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_fit_log_every_prints(capsys):
    fit(nn.Linear(2, 2), _loader(_toy_problem(64)), nn.functional.cross_entropy, epochs=1, lr=0.01,
        progress=False, log_every=1)
    out = capsys.readouterr().out
    assert out.count("loss") == 2  # 64 samples / batch 32 = 2 steps


def test_fit_silent_without_progress(capsys):
    fit(nn.Linear(2, 2), _loader(_toy_problem(64)), nn.functional.cross_entropy, epochs=1, lr=0.01,
        progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_fit_passes_structured_targets():
    """Targets may be lists of dicts (detection); loss_fn receives them unchanged."""
    seen = []

    def loss_fn(output, targets):
        seen.append(targets)
        return output.sum() * 0 + sum(t["value"].sum() for t in targets) * 0 + output.pow(2).mean()

    batches = [(torch.randn(4, 2), [{"value": torch.ones(3)} for _ in range(4)]) for _ in range(3)]
    fit(nn.Linear(2, 2), batches, loss_fn, epochs=1, lr=0.01, progress=False, grad_clip=1.0)
    assert len(seen) == 3 and isinstance(seen[0], list) and "value" in seen[0][0]


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs=1.5), TypeError, "epochs"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(schedule="step"), ValueError, "schedule"),
    (dict(log_every=0), ValueError, "log_every"),
    (dict(grad_clip=-1.0), ValueError, "grad_clip"),
])
def test_fit_bad_arguments(kwargs, exc, name):
    args = dict(epochs=1, lr=0.01, progress=False) | kwargs
    with pytest.raises(exc, match=name):
        fit(nn.Linear(2, 2), _loader(_toy_problem(64)), nn.functional.cross_entropy, **args)


def test_fit_bad_model_and_loss():
    with pytest.raises(TypeError, match="model"):
        fit("model", [], nn.functional.cross_entropy, epochs=1, lr=0.1)
    with pytest.raises(TypeError, match="loss_fn"):
        fit(nn.Linear(2, 2), [], "ce", epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="loader"):
        fit(nn.Linear(2, 2), [], nn.functional.cross_entropy, epochs=1, lr=0.1, progress=False)


class _Tiny(nn.Module):
    def __init__(self, hidden=4):
        super().__init__()
        self.config = {"hidden": hidden}
        self.layer = nn.Linear(2, hidden)
        self.norm = nn.BatchNorm1d(hidden)


def test_save_and_load_weights_roundtrip(tmp_path):
    model = _Tiny()
    model.norm.running_mean.fill_(0.25)
    path = tmp_path / "sub" / "tiny.pt"
    save_weights(model, path, command="python make.py", seed=0, scores={"acc": 0.5})
    other = _Tiny()
    meta = load_weights(other, path)
    assert torch.equal(other.layer.weight, model.layer.weight)
    assert torch.equal(other.norm.running_mean, model.norm.running_mean)
    assert meta["command"] == "python make.py" and meta["seed"] == 0 and meta["scores"] == {"acc": 0.5}
    assert meta["architecture"] == "_Tiny" and meta["config"] == {"hidden": 4}
    assert read_metadata(path) == meta


def test_load_weights_rejects_other_architecture(tmp_path):
    path = tmp_path / "tiny.pt"
    save_weights(_Tiny(hidden=4), path)
    with pytest.raises(ValueError, match="shape mismatch: layer.weight"):
        load_weights(_Tiny(hidden=8), path)
    with pytest.raises(ValueError, match="missing.*unexpected"):
        load_weights(nn.Sequential(nn.Linear(2, 4)), path)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_weights(_Tiny(), tmp_path / "absent.pt")
    torch.save({"just": "a dict"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="save_weights"):
        load_weights(_Tiny(), tmp_path / "other.pt")


def test_save_weights_stores_str_subclasses_as_plain_str(tmp_path):
    path = tmp_path / "v.pt"
    save_weights(_Tiny(), path, torch_version=torch.__version__, sizes=(1, 2))
    meta = read_metadata(path)  # loads with weights_only=True
    assert meta["torch_version"] == str(torch.__version__) and type(meta["torch_version"]) is str
    assert meta["sizes"] == [1, 2]


def test_save_weights_rejects_non_plain_metadata(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        save_weights(_Tiny(), tmp_path / "x.pt", data=np.zeros(3))
    with pytest.raises(TypeError, match="model"):
        save_weights("model", tmp_path / "x.pt")


def test_load_pretrained_model_names_the_problem(monkeypatch, tmp_path):
    from lecturelib import train
    with pytest.raises(TypeError, match="name must be a str"):
        train.load_pretrained_model(3, {"m": nn.Linear}, "make weights")
    with pytest.raises(ValueError, match=r"one of \('m',\)"):
        train.load_pretrained_model("x", {"m": nn.Linear}, "make weights")
    monkeypatch.setattr(train, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="create it with `make weights`"):
        train.load_pretrained_model("m", {"m": nn.Linear}, "make weights")
    layer = nn.Linear(3, 2)
    layer.config = {"in_features": 3, "out_features": 2}
    train.save_weights(layer, tmp_path / "m.pt", seed=4)
    loaded = train.load_pretrained_model("m", {"m": nn.Linear}, "make weights")
    assert torch.equal(loaded.weight, layer.weight) and loaded.metadata["seed"] == 4 and not loaded.training


def test_eval_mode_restores_the_mode_even_after_an_error():
    from lecturelib.train import eval_mode
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    with eval_mode(model):
        assert not model.training and not model[1].training
    assert model.training and model[1].training
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training
    frozen = model.eval()
    with eval_mode(frozen):
        pass
    assert not frozen.training
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        with eval_mode("model"):
            pass


def test_eval_mode_restores_each_submodules_own_mode():
    """A BatchNorm frozen in eval mode (fine-tuning keeps its statistics) inside a model in train mode comes back
    frozen, also after an error; the rest comes back in train mode."""
    from lecturelib.train import eval_mode
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5)).train()
    model[1].eval()
    for fail in (False, True):
        with contextlib.suppress(RuntimeError), eval_mode(model):
            assert not any(m.training for m in model.modules())
            if fail:
                raise RuntimeError("boom")
        assert [m.training for m in model.modules()] == [True, True, False, True]


def test_shuffled_loader_is_seeded_and_drops_only_a_partial_last_batch():
    from lecturelib.train import shuffled_loader
    data_ = torch.arange(10)

    def batches(seed, batch_size=4):
        return [b.tolist() for b in shuffled_loader(data_, batch_size, seed)]
    torch.manual_seed(123)
    first = batches(7)
    torch.manual_seed(456)                                   # the global generator does not matter
    assert batches(7) == first and batches(8) != first
    assert [len(b) for b in first] == [4, 4]                 # 10 = 4 + 4 + 2: the partial batch dropped
    assert [len(b) for b in batches(7, batch_size=16)] == [10]   # one batch: kept whole
    with pytest.raises(ValueError, match="batch_size"):
        shuffled_loader(data_, 0, 1)
    with pytest.raises((ValueError, TypeError), match="seed"):
        shuffled_loader(data_, 4, -1)
