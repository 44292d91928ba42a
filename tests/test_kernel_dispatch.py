"""Backend selection, the env override, launch helpers and the bad-input errors of the public kernel ops."""

from __future__ import annotations

import logging

import pytest
import torch
from kernel_cases import make_ssd_inputs

from earthcast.kernels import last_backend, select_backend, ssd_scan
from earthcast.kernels.dispatch import ENV_BACKEND, autotune_configs, device_context, dot_precision


@pytest.fixture
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _ssd_args(**kw) -> list[torch.Tensor]:
    inp = make_ssd_inputs(
        1, 20, 2, 8, 1, 8, with_z=False, with_init=False, with_d=False, with_bias=False, **kw
    )
    return [inp[k].detach() for k in ("x", "dt", "A", "B", "C")]


def test_cpu_tensor_under_interpreter_selects_triton(no_override) -> None:
    assert select_backend(torch.zeros(2)) == "triton"
    assert last_backend() == "triton"


def test_cpu_tensor_without_interpreter_selects_reference(no_override, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert select_backend(torch.zeros(2)) == "reference"
    with pytest.raises(RuntimeError, match=r"TRITON_INTERPRET=1.*use backend='reference'"):
        select_backend(torch.zeros(2), "triton")


def test_env_and_argument_force_a_path(no_override, monkeypatch) -> None:
    monkeypatch.setenv(ENV_BACKEND, "reference")
    assert select_backend(torch.zeros(2)) == "reference"
    assert select_backend(torch.zeros(2), "triton") == "triton"  # the argument wins over the environment
    monkeypatch.setenv(ENV_BACKEND, "auto")
    assert select_backend(torch.zeros(2), "reference") == "reference"


def test_unknown_backend_names_the_choices(no_override, monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"unknown kernel backend 'cuda'.*triton, reference, auto"):
        select_backend(torch.zeros(2), "cuda")
    monkeypatch.setenv(ENV_BACKEND, "fast")
    with pytest.raises(ValueError, match=f"environment variable {ENV_BACKEND}"):
        select_backend(torch.zeros(2))


def test_ssd_scan_records_and_logs_the_path_once(no_override, monkeypatch, caplog) -> None:
    import earthcast.kernels.dispatch as dispatch

    monkeypatch.setattr(dispatch, "_logged", set())
    args = _ssd_args()
    with caplog.at_level(logging.INFO, logger="earthcast.kernels.dispatch"):
        ssd_scan(*args, chunk_size=16)
        ssd_scan(*args, chunk_size=16)
    assert last_backend("ssd_scan") == "triton"
    assert [r.getMessage() for r in caplog.records].count(
        "earthcast.kernels: ssd_scan uses the triton path (interpreted)"
    ) == 1
    monkeypatch.setenv(ENV_BACKEND, "reference")
    y_ref = ssd_scan(*args, chunk_size=16)
    assert last_backend("ssd_scan") == "reference"
    monkeypatch.setenv(ENV_BACKEND, "triton")
    torch.testing.assert_close(ssd_scan(*args, chunk_size=16), y_ref, rtol=1e-5, atol=1e-5)


def test_cpu_launch_context_never_touches_torch_cuda(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("torch.cuda.device called for a CPU tensor")

    monkeypatch.setattr(torch.cuda, "device", boom)
    with device_context(torch.zeros(1)):
        pass
    assert dot_precision(torch.zeros(1)) == "ieee"


def test_autotune_configs_trimmed_only_when_interpreting(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert autotune_configs([1, 2, 3]) == [1]
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert autotune_configs([1, 2, 3]) == [1, 2, 3]


@pytest.mark.parametrize(
    ("dims", "chunk", "match"),
    [
        ({"p": 256}, 64, r"headdim 256 is not supported by the Triton SSD kernel \(supported: 1\.\.128"),
        ({"n": 200}, 64, r"d_state 200 is not supported by the Triton SSD kernel \(supported: 1\.\.128"),
        ({}, 48, r"chunk_size 48 is not supported by the Triton SSD kernel \(supported: 16, 32, 64, 128\)"),
    ],
)
def test_unsupported_kernel_sizes_raise_with_fix(no_override, dims, chunk, match) -> None:
    p, n = dims.get("p", 8), dims.get("n", 8)
    x, dt, A = torch.randn(1, 4, 2, p), torch.randn(1, 4, 2), -torch.ones(2)
    B = C = torch.randn(1, 4, 1, n)
    with pytest.raises(ValueError, match=match) as err:
        ssd_scan(x, dt, A, B, C, chunk_size=chunk, backend="triton")
    assert "backend='reference'" in str(err.value)
    ssd_scan(x, dt, A, B, C, chunk_size=chunk, backend="reference")  # the reference takes any size


def test_bad_shapes_raise_clear_errors(no_override) -> None:
    x, dt, A, B, C = _ssd_args()
    with pytest.raises(ValueError, match=r"heads \(2\) must be divisible by the number of B/C groups \(3\)"):
        ssd_scan(x, dt, A, torch.randn(1, 20, 3, 8), torch.randn(1, 20, 3, 8))
    with pytest.raises(ValueError, match=r"dt has shape \(1, 20\), expected"):
        ssd_scan(x, dt[..., 0], A, B, C)
    with pytest.raises(ValueError, match=r"D has shape \(3,\), expected \(heads,\)"):
        ssd_scan(x, dt, A, B, C, D=torch.ones(3))
    with pytest.raises(ValueError, match="initial_states has shape"):
        ssd_scan(x, dt, A, B, C, initial_states=torch.zeros(1, 2, 8, 4))
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ssd_scan(x, dt, A, B, C, chunk_size=0, backend="reference")
