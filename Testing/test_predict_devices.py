"""predict on GPUs, checked on the CPU: it predicts in the precision the training probe chooses (the
same helper, timing forward passes), the summary records that choice, and its workers take a machine's
GPUs in turn (worker i -> GPU i % GPUs; torch's CUDA queries faked)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from UltrasoundRefineLib.train import model as model_module
from UltrasoundRefineLib.train.model import Model, ModelPredictor, inference_precision, predict_probabilities
from UltrasoundRefineLib.train.network import build_network, forward_logits, network_kwargs

SIZE = 32


@pytest.fixture
def model() -> Model:
    torch.manual_seed(0)
    kwargs = network_kwargs("unet", 3, {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1})
    card = {"format": 1, "architecture": {"name": "unet", "kwargs": kwargs, "overrides": {}},
            "input": {"size": SIZE, "channels": ["max", "std", "frame"], "layout": "C,S,S float32"},
            "postprocess": "basic"}
    return Model(net=build_network("unet", kwargs).eval(), card=card, device=torch.device("cpu"))


class _FakeProbe:
    """Stands in for choose_precision: runs the forward passes it is given (as the real probe does) and
    chooses bfloat16, which the CPU can autocast to, so the choice shows in the numbers."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, dev, run_steps, *, images_per_step, kept=None, kept_from="checkpoint", workload=None, **kw):
        self.calls.append({"images": images_per_step, "kept": kept, "kept_from": kept_from, "workload": workload})
        if kept is None:
            for dtype in (None, torch.bfloat16):
                run_steps(dtype, 1)
        return dev.with_precision(torch.bfloat16, {"chosen": "bfloat16"} if kept is None else {"kept": kept})


def test_prediction_runs_in_the_precision_the_probe_chose(model, monkeypatch):
    images = torch.rand(3, 3, SIZE, SIZE)
    float32 = predict_probabilities(model, images, tta=False)  # the CPU: float32, no probe
    assert model.precision is not None and not model.precision.amp and model.precision.precision_probe is None

    probe = _FakeProbe()
    monkeypatch.setattr(model_module, "choose_precision", probe)
    model.precision = None
    chosen = predict_probabilities(model, images, tta=False)
    assert len(probe.calls) == 1 and probe.calls[0]["images"] == 3 and probe.calls[0]["workload"][0] == "predict"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.sigmoid(forward_logits(model.net, images).float())[:, 0]
    assert torch.equal(chosen[0], expected)  # what bfloat16 autocast gives ...
    assert not torch.equal(chosen, float32)  # ... which float32 does not
    predict_probabilities(model, images, tta=False)
    assert len(probe.calls) == 1  # chosen once per model


def test_workers_take_the_starting_processs_choice(model, monkeypatch, tmp_path):
    """A predictor sent to a worker loads the model there and keeps the parent's dtype, without probing."""
    from UltrasoundRefineLib.train.model import save_model

    model_dir = save_model(model, tmp_path / "m")
    probe = _FakeProbe()
    monkeypatch.setattr(model_module, "choose_precision", probe)
    worker_side = ModelPredictor(model_dir, "cpu", precision="bfloat16")
    assert worker_side.model.precision.amp_dtype == torch.bfloat16
    assert probe.calls == [{"images": 1, "kept": "bfloat16", "kept_from": "parent_process",
                            "workload": probe.calls[0]["workload"]}]


def test_a_predictor_sent_to_workers_carries_the_choice(model, monkeypatch, tmp_path):
    """What ``clean --model --workers N`` sends its workers: a predictor that chose here (one probe), whose
    copies load the model and keep that choice; the mask source built on it in a worker does too."""
    import pickle

    from UltrasoundRefineLib.clean.masks import predictor_source
    from UltrasoundRefineLib.train.model import save_model

    model_dir = save_model(model, tmp_path / "m")
    probe = _FakeProbe()
    monkeypatch.setattr(model_module, "choose_precision", probe)
    here = ModelPredictor(model_dir, "cpu")
    assert here.choose_precision().amp_dtype == torch.bfloat16 and here.precision == "bfloat16"
    assert [c["kept"] for c in probe.calls] == [None]  # probed once, here
    copy = pickle.loads(pickle.dumps(here))
    assert copy._model is None and copy.precision == "bfloat16"
    predictor_source(copy)  # a worker builds its source: the model loads there ...
    assert copy.model.precision.amp_dtype == torch.bfloat16  # ... in the parent's precision
    assert [(c["kept"], c["kept_from"]) for c in probe.calls] == [(None, "parent_process"), ("bfloat16", "parent_process")]


def test_clean_with_a_model_chooses_once_and_cleans(model, phantom_set, tmp_path, monkeypatch):
    from UltrasoundRefineLib.cli import main
    from UltrasoundRefineLib.train.model import save_model

    model_dir = save_model(model, tmp_path / "m")
    chosen = []
    real = ModelPredictor.choose_precision
    monkeypatch.setattr(ModelPredictor, "choose_precision", lambda self: chosen.append(self) or real(self))
    loops = sorted(str(p) for p in (phantom_set(2, 5) / "loops").iterdir())
    assert main(["clean", *loops, "--model", str(model_dir), "--device", "cpu", "--out", str(tmp_path / "c"),
                 "--seed", "s", "--min-quality", "0", "--min-fraction", "0", "--max-fraction", "1", "--quiet"]) == 0
    assert len(chosen) == 1 and chosen[0].precision == "float32"
    assert (tmp_path / "c" / "manifest.csv").is_file()


def test_the_real_probe_does_not_run_on_the_cpu(model):
    choice = inference_precision(model)
    assert not choice.amp and not choice.tf32 and choice.precision_probe is None


def test_predict_records_its_precision(model, phantom_set, tmp_path, capsys):
    from UltrasoundRefineLib.cli import main
    from UltrasoundRefineLib.train.model import save_model

    model_dir = save_model(model, tmp_path / "m")
    loops = sorted(str(p) for p in (phantom_set(2, 5) / "loops").iterdir())
    assert main(["predict", "--model", str(model_dir), *loops, "--out", str(tmp_path / "out"), "--quiet",
                 "--device", "cpu", "--no-tta"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"]["precision"] == {"dtype": "float32", "tf32": False, "probe": None}


@pytest.fixture
def three_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # this process is no worker
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_worker_i_gets_gpu_i_modulo_the_gpus():
    from UltrasoundRefineLib.executor import worker_gpu

    assert [worker_gpu(i, 3) for i in range(7)] == ["0", "1", "2", "0", "1", "2", "0"]
    # the GPUs the user left visible, in their order, not GPUs 0..n-1
    assert [worker_gpu(i, 3, "4,6,7") for i in range(4)] == ["4", "6", "7", "4"]
    assert [worker_gpu(i, 2, "5, 1") for i in range(3)] == ["5", "1", "5"]


def test_predict_workers_spread_over_the_gpus(three_gpus, monkeypatch):
    """``predict --workers 4`` on 3 GPUs: the executor predict gets, its workers' own start-up (run here
    in turn as the pool runs it in each process), GPU by GPU."""
    from UltrasoundRefineLib.batch import batch_executor
    from UltrasoundRefineLib.executor import machine_gpus

    assert [machine_gpus(d) for d in ("auto", "cuda", "CUDA", "cuda:2", "cpu", "mps")] == [3, 3, 3, 1, 0, 0]
    with batch_executor("local", 4, device="cuda") as executor:
        assert "3 GPUs" in executor.name
        init, args = executor._pool._initializer, executor._pool._initargs  # no process started yet
        seen = []
        for _ in range(4):
            init(*args)
            seen.append(os.environ.pop("CUDA_VISIBLE_DEVICES"))
    assert seen == ["0", "1", "2", "0"]
    for device in ("cpu", "cuda:1"):  # no GPU asked for, or one named: the workers are left alone
        with batch_executor("local", 2, device=device) as executor:
            init, args = executor._pool._initializer, executor._pool._initargs
            init(*args)
            assert "CUDA_VISIBLE_DEVICES" not in os.environ and "GPUs" not in executor.name


def test_experiment_with_device_cuda_spreads_over_every_gpu(three_gpus, monkeypatch):
    """``experiment --device cuda`` is every GPU (though it resolves to cuda:0): 8 runs per GPU, workers
    spread over the three, a CPU stage each beside them."""
    from UltrasoundRefineLib.experiment import runner
    from UltrasoundRefineLib.experiment.spec import ExperimentSpec
    from UltrasoundRefineLib.train import device as device_module

    asked = {}

    class Stop(Exception):
        pass

    def executor_from_spec(spec, **kwargs):
        asked.update(kwargs)
        raise Stop

    real = device_module.resolve_device
    monkeypatch.setattr(device_module, "resolve_device", lambda d, amp=True: real("cpu"))  # no CUDA here
    monkeypatch.setattr(runner, "executor_from_spec", executor_from_spec)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 64)
    with pytest.raises(Stop):
        runner.run_experiment("unused", ExperimentSpec(name="x"), device="cuda")
    assert asked["gpus"] == 3 and asked["slots"] == 24 + 24  # 8 device runs per GPU, a CPU stage each
