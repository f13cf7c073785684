"""``load_model``'s ``dtype`` (a torch.dtype or a name) and ``device`` (str, int or torch.device), and
the errors for a dtype or a device this torch cannot give, each naming the argument and what is allowed."""

from __future__ import annotations

import pytest
import torch

from spectra.engine import check_config
from spectra.models.devices import available_devices, check_device
from spectra.models.loading import check_dtype, dtype_name, load_model


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("float64", torch.float64),
        ("torch.bfloat16", torch.bfloat16),
        (" BF16 ", torch.bfloat16),
        (torch.float16, torch.float16),
        (None, torch.float32),
    ],
)
def test_dtype_names_and_torch_dtypes(given, expected):
    assert check_dtype(given) == expected
    assert dtype_name(given) == str(expected).removeprefix("torch.")


@pytest.mark.parametrize("bad", ["int8", "float8", torch.int8, torch.complex64, 16, ""])
def test_a_dtype_that_is_no_model_dtype_names_the_allowed_ones(bad):
    with pytest.raises(ValueError, match=r"dtype=.*: not a model dtype; allowed: float32 \(fp32\), bfloat16 \(bf16\)"):
        check_dtype(bad)


@pytest.mark.parametrize("dtype", ["bf16", "float16", torch.bfloat16])
def test_load_model_takes_a_dtype_name(dtype):
    model, _ = load_model("tiny-llama", dtype=dtype)
    assert model.dtype == check_dtype(dtype)
    assert {p.dtype for p in model.parameters()} == {check_dtype(dtype)}


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "cpu:0"])
def test_load_model_takes_a_cpu_device_as_str_or_torch_device(device):
    model, _ = load_model("tiny-llama", dtype="bf16", device=device)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert model.dtype == torch.bfloat16


def test_load_model_rejects_int8_before_loading():
    with pytest.raises(ValueError, match=r"^dtype='int8': not a model dtype; allowed: "):
        load_model("tiny-llama", dtype="int8")


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0, torch.device("cuda", 1)])
def test_cuda_without_cuda_names_the_torch_and_the_allowed_devices(device, monkeypatch):
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError) as error:
        load_model("tiny-llama", device=device)
    message = str(error.value)
    assert message.startswith(f"device={device!r}: this torch ({torch.__version__}")
    assert message.endswith("; allowed: cpu" + (", mps" if "mps" in available_devices() else ""))


def test_a_gpu_index_past_the_last_gpu_names_the_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"^device='cuda:7': this machine has 2 CUDA GPU\(s\) \(cuda:0 to cuda:1\); "):
        check_device("cuda:7")
    with pytest.raises(ValueError, match=r"allowed: cpu, cuda, cuda:0, cuda:1"):
        load_model("tiny-llama", device=7)


@pytest.mark.parametrize("bad", ["tpu9", "gpu", "meta", "disk", "", True, 1.5, -1, ["cpu"]])
def test_nonsense_devices_name_the_allowed_ones(bad):
    with pytest.raises(ValueError, match=r"^device=.*allowed: .*cpu, cuda, cuda:N"):
        check_device(bad)


def test_without_availability_only_the_spelling_is_checked(monkeypatch):
    _no_cuda(monkeypatch)
    assert check_device("cuda:3", available=False) == torch.device("cuda", 3)
    with pytest.raises(ValueError, match="not a device"):
        check_device("tpu9", available=False)


def test_run_configs_take_dtype_aliases_and_device_spellings():
    base = {"kind": "profile", "models": "tiny-llama", "context_length": 16, "out": "x"}
    assert check_config({**base, "dtype": "bf16"})["dtype"] == "bfloat16"
    assert check_config(base)["device"] == "cpu"  # the default is unchanged
    assert check_config({**base, "device": None})["device"] == "cpu"
    checked = check_config({**base, "device": "cuda:1"})  # checked where the task loads the model
    assert (checked["device"], checked["gpus_per_task"]) == ("cuda:1", 1)
    with pytest.raises(ValueError, match=r"^dtype: 'int8'; allowed values are float32, float16, bfloat16"):
        check_config({**base, "dtype": "int8"})
    with pytest.raises(ValueError, match=r"^device='tpu9': not a device; allowed: cpu, cuda, cuda:N"):
        check_config({**base, "device": "tpu9"})
