"""CPU training asks glibc to keep freed memory for reuse (train.cpu_memory)."""

from __future__ import annotations

import platform

import pytest

from convlens.train import TrainConfig, cpu_memory, fit


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_thresholds_are_raised_once_on_glibc(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_kept", None)
    assert cpu_memory.keep_freed_memory() is True
    assert cpu_memory.keep_freed_memory() is True  # the second call changes nothing


def test_elsewhere_it_declines_without_touching_the_allocator(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_kept", None)
    monkeypatch.setattr(cpu_memory.platform, "system", lambda: "Darwin")
    assert cpu_memory.keep_freed_memory() is False


def test_training_on_the_cpu_asks_for_it(digits, tmp_path, monkeypatch):
    import convlens.train.fitting as fitting

    calls = []
    monkeypatch.setattr(fitting, "keep_freed_memory", lambda: calls.append(1) or True)
    fit(digits, TrainConfig(epochs=1, device="cpu"), tmp_path / "run")
    assert calls == [1]
