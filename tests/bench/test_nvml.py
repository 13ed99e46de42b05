"""NVML sampling against a fake ``pynvml`` module: the real call sequence, NVML errors, a GPU without power."""

import sys
import time
import types

import pytest

from ssmbench.bench.nvml import NvmlSampler


class NVMLError(Exception):
    def __init__(self, value):
        self.value = value
        super().__init__(f"NVML error {value}")


def fake_pynvml(*, power=True, energy=True, init_fails=False, flaky_temperature=False):
    """A module with pynvml's names; every call is logged in ``calls``."""
    m = types.ModuleType("pynvml")
    m.NVMLError, m.NVML_ERROR_NOT_SUPPORTED, m.NVML_ERROR_DRIVER_NOT_LOADED = NVMLError, 3, 9
    m.NVML_CLOCK_SM, m.NVML_TEMPERATURE_GPU = 1, 0
    m.calls = []
    state = {"energy_mj": 5_000_000, "temps": 0}

    def logged(name, fn):
        def call(*args):
            m.calls.append(name)
            return fn(*args)
        setattr(m, name, call)

    def init():
        if init_fails:
            raise NVMLError(m.NVML_ERROR_DRIVER_NOT_LOADED)

    def power_usage(handle):
        if not power:
            raise NVMLError(m.NVML_ERROR_NOT_SUPPORTED)
        return 250_000  # mW

    def total_energy(handle):
        if not (power and energy):
            raise NVMLError(m.NVML_ERROR_NOT_SUPPORTED)
        state["energy_mj"] += 2_000  # 2 J between consecutive reads
        return state["energy_mj"]

    def temperature(handle, sensor):
        assert sensor == m.NVML_TEMPERATURE_GPU
        state["temps"] += 1
        if flaky_temperature and state["temps"] == 2:
            raise NVMLError(999)
        return 60 + state["temps"] % 3

    logged("nvmlInit", init)
    logged("nvmlShutdown", lambda: None)
    logged("nvmlDeviceGetHandleByIndex", lambda i: f"handle{i}")
    logged("nvmlDeviceGetPowerUsage", power_usage)
    logged("nvmlDeviceGetTotalEnergyConsumption", total_energy)
    logged("nvmlDeviceGetClockInfo", lambda h, kind: 1980 if kind == m.NVML_CLOCK_SM else 0)
    logged("nvmlDeviceGetTemperature", temperature)
    logged("nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30))
    return m


def run_sampler(monkeypatch, fake, seconds=0.05):
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with NvmlSampler(index=2, interval_s=0.005) as s:
        time.sleep(seconds)
    return s.readings


def test_full_readings_and_call_sequence(monkeypatch):
    fake = fake_pynvml()
    r = run_sampler(monkeypatch, fake)
    assert fake.calls[:3] == ["nvmlInit", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetTotalEnergyConsumption"]
    assert fake.calls[-2:] == ["nvmlDeviceGetTotalEnergyConsumption", "nvmlShutdown"]
    assert fake.calls.count("nvmlDeviceGetPowerUsage") >= 3  # the thread sampled while the block ran
    assert r.energy_j == pytest.approx(2.0) and not r.errors
    m = {(x.metric, x.stat): x.value for x in r.metrics(tokens=1000)}
    assert m["energy_per_token", "value"] == pytest.approx(2.0 / 1000)
    assert m["power", "mean"] == pytest.approx(2.0 / r.seconds)
    assert m["sm_clock", "median"] == 1980 and m["temperature", "max"] in (61, 62)
    assert m["nvml_memory_used", "max"] == 3 * 2**30


def test_gpu_without_power_readings_still_reports_clocks(monkeypatch):
    fake = fake_pynvml(power=False)
    r = run_sampler(monkeypatch, fake)
    assert r.energy_j is None and not r.power_w
    assert fake.calls.count("nvmlDeviceGetPowerUsage") == 1  # not supported: asked once, then no more
    names = {x.metric for x in r.metrics(tokens=1000)}
    assert "energy_per_token" not in names and "power" not in names and {"sm_clock", "temperature"} <= names
    assert any("PowerUsage" in e for e in r.errors) and fake.calls[-1] == "nvmlShutdown"


def test_no_energy_counter_integrates_power(monkeypatch):
    r = run_sampler(monkeypatch, fake_pynvml(energy=False), seconds=0.08)
    assert r.energy_j == pytest.approx(250.0 * r.seconds)
    m = {(x.metric, x.stat): x.value for x in r.metrics(tokens=10)}
    assert m["power", "mean"] == pytest.approx(250.0)


def test_init_failure_is_inert(monkeypatch):
    fake = fake_pynvml(init_fails=True)
    r = run_sampler(monkeypatch, fake)
    assert r.metrics(tokens=10) == [] and "nvmlInit" in r.errors[0]
    assert "nvmlDeviceGetPowerUsage" not in fake.calls


def test_a_transient_error_drops_one_reading(monkeypatch):
    r = run_sampler(monkeypatch, fake_pynvml(flaky_temperature=True))
    assert len(r.temperature_c) == len(r.sm_clock_mhz) - 1 and any("999" in e for e in r.errors)
    assert r.energy_j == pytest.approx(2.0)


def test_missing_pynvml_is_inert(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with NvmlSampler() as s:
        pass
    assert s.readings.metrics(tokens=1) == [] and "not installed" in s.readings.errors[0]
