"""The packing calibration (bytezoo.kernels.mlstm.calibration): keyed by CPU, torch and build; measured once and
reused; skipped by the environment switch. No test here depends on a timing: the measurement is replaced."""
from __future__ import annotations

import json

import pytest
import torch

from bytezoo.kernels.mlstm import calibration, cpu_extension, fused_cpu, onednn, packing


@pytest.fixture
def calibrating(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv(calibration.ENV_SWITCH, "1")
    calibration.reset()
    calls = []

    def fake_measure():
        calls.append(1)
        return {"fp32_min_size": 512, "bf16_min_size": 1, "fp32_blocked_max_size": 2048,
                "fp32_blocked_max_size_threads": 4096, "fp32_blocked_stream_min_size": 1024,
                "fp32_blocked_stream_min_size_threads": 512, "timings": {}, "seconds": 0.0}

    monkeypatch.setattr(calibration, "measure", fake_measure)
    monkeypatch.setattr(calibration, "other_processes_busy", lambda: 0.0)  # a quiet machine unless a test says
    yield calls
    calibration.reset()


def test_switch_off_uses_the_builtin_rule(monkeypatch):
    monkeypatch.setenv(calibration.ENV_SWITCH, "0")
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured with the switch off"))
    assert calibration.thresholds() == calibration.DEFAULTS


def test_measured_once_cached_and_reused(calibrating, tmp_path):
    assert calibration.thresholds() == {"fp32_min_size": 512, "bf16_min_size": 1, "fp32_blocked_max_size": 2048,
                                              "fp32_blocked_max_size_threads": 4096,
                                              "fp32_blocked_stream_min_size": 1024,
                                              "fp32_blocked_stream_min_size_threads": 512}
    path = calibration.cache_path()
    assert path.parent == tmp_path / "bytezoo" and path.exists()
    assert calibration.calibration_key() in path.name
    record = json.loads(path.read_text())
    assert record["torch"] == torch.__version__ and record["key"] == calibration.calibration_key()
    calibration.thresholds()
    calibration.reset()  # a new process: read from the file, not measured again
    assert calibration.thresholds()["fp32_min_size"] == 512
    assert len(calibrating) == 1


def test_refresh_measures_again(calibrating, monkeypatch):
    calibration.thresholds()
    calibration.reset()
    monkeypatch.setenv(calibration.ENV_SWITCH, "refresh")
    calibration.thresholds()
    assert len(calibrating) == 2


def test_key_changes_with_cpu_torch_and_build(monkeypatch):
    base = calibration.calibration_key()
    monkeypatch.setattr(calibration, "_cpu_identity", lambda: "AMD EPYC 9B14|flags avx512_bf16")
    other_cpu = calibration.calibration_key()
    monkeypatch.setattr(calibration.torch, "__version__", "9.9.9")
    other_torch = calibration.calibration_key()
    monkeypatch.setattr(cpu_extension, "CFLAGS", ("-O2",))
    other_build = calibration.calibration_key()
    assert len({base, other_cpu, other_torch, other_build}) == 4


def test_damaged_cache_is_measured_again(calibrating):
    path = calibration.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert calibration.thresholds()["fp32_min_size"] == 512
    assert len(calibrating) == 1


def test_packing_follows_the_calibrated_threshold(calibrating, monkeypatch):
    monkeypatch.setattr(packing, "PACK_MIN_SIZE", None)
    weight = torch.randn(512, 2048)
    packed = packing.RecurrentMatmul(weight, 64, 64).packed
    assert packed is not None or not onednn.packing_works(torch.float32)
    assert packing.RecurrentMatmul(torch.randn(256, 1024), 64, 64).packed is None
    monkeypatch.setattr(packing, "PACK_MIN_SIZE", 4096)  # a fixed number wins over the calibration
    assert packing.RecurrentMatmul(weight, 64, 64).packed is None


def test_blocked_limit_stops_at_the_first_loss_and_extrapolates_one_octave():
    limit = calibration.blocked_limit
    assert limit([(256, 0.7), (1024, 1.2)], default=0) == 512
    assert limit([(256, 0.7), (1024, 0.9)], default=0) == 2048
    assert limit([(256, 1.2), (1024, 0.8)], default=4096) == 0  # a clear loss; a win above it is not believed
    assert limit([], default=512) == 0


def test_blocked_limit_leaves_too_close_calls_to_the_builtin_rule():
    limit = calibration.blocked_limit
    assert limit([(256, 1.04), (1024, 1.2)], default=512) == 512  # 256 too close: the rule says won; 1024 lost
    assert limit([(256, 1.04), (1024, 1.2)], default=0) == 0  # the rule says lost
    assert limit([(256, 0.8), (1024, 1.02)], default=2048) == 2048
    assert limit([(256, 0.8), (1024, 0.97)], default=512) == 512


def test_streaming_starts_where_it_won_at_every_larger_size():
    stream_from, never = calibration.stream_from, calibration.NEVER
    assert stream_from([(256, 1.2), (1024, 0.75)], default=never) == 1024
    assert stream_from([(256, 0.8), (1024, 0.75)], default=never) == 1  # won everywhere: any size streams
    assert stream_from([(256, 0.8), (1024, 1.2)], default=1) == never  # lost at the largest: a smaller win is noise
    assert stream_from([], default=1024) == never


def test_streaming_leaves_too_close_calls_to_the_builtin_rule():
    stream_from, never = calibration.stream_from, calibration.NEVER
    assert stream_from([(256, 1.2), (1024, 0.98)], default=1024) == 1024
    assert stream_from([(256, 1.2), (1024, 0.98)], default=never) == never
    assert stream_from([(256, 1.03), (1024, 0.7)], default=256) == 1


def test_the_limit_judges_the_panel_mode_chosen_at_each_size(monkeypatch):
    """At a size that streams, the blocked products are compared with the library's by their streamed time."""
    if fused_cpu.unavailable_reason() is not None or not cpu_extension.cpu_ops().blocked_products_available():
        pytest.skip("the blocked products cannot run here")
    fake_times = {False: [1.2] * 7, True: [0.8] * 7}  # cached loses to the library (1.0), streamed wins

    def fake_interleaved(functions, repeats, calls=1):
        return [[1.0] * 7, fake_times[False], fake_times[True]]

    monkeypatch.setattr(calibration, "_interleaved_times", fake_interleaved)
    shapes = ((64, 4, 2), (128, 4, 2))
    limit, stream_min = calibration._measure_blocked(1 << 30, {}, shapes, default=0, default_stream=1 << 30)
    assert (limit, stream_min) == (256, 1)  # streamed everywhere, and there it won at both sizes
    fake_times[True] = [1.3] * 7
    limit, stream_min = calibration._measure_blocked(1 << 30, {}, shapes, default=0, default_stream=1 << 30)
    assert (limit, stream_min) == (0, calibration.NEVER)


def test_real_measurement_is_short_and_well_formed():
    """Runs the real (tiny) measurement once: shape of the result only, never its numbers."""
    result = calibration.measure(sizes=(64, 128), batch=8, blocked_shapes=((64, 8, 4), (128, 8, 4)))
    assert set(calibration.DEFAULTS) <= set(result) and result["seconds"] < 10
    for key in ("fp32_blocked_max_size", "fp32_blocked_max_size_threads"):
        assert result[key] in (0, 90, 256)  # 90: between 64 and 128; 256: won at both
    for key in ("fp32_blocked_stream_min_size", "fp32_blocked_stream_min_size_threads"):
        assert result[key] in (1, 128, calibration.NEVER)


def test_a_measurement_under_load_is_provisional_until_a_quiet_process_repeats_it(calibrating, monkeypatch):
    load = {"busy": 1.0}
    monkeypatch.setattr(calibration, "other_processes_busy", lambda: load["busy"])
    calibration.thresholds()
    record = json.loads(calibration.cache_path().read_text())
    assert record["provisional"] is True and record["other_processes_busy_cores"] == 1.0
    calibration.reset()
    calibration.thresholds()  # still busy: the provisional answer is used, not measured again
    assert len(calibrating) == 1
    load["busy"] = 0.1
    calibration.reset()
    calibration.thresholds()  # quiet now: measured again, and final
    assert len(calibrating) == 2 and json.loads(calibration.cache_path().read_text())["provisional"] is False
    calibration.reset()
    load["busy"] = None  # a final answer is never re-checked
    calibration.thresholds()
    assert len(calibrating) == 2
