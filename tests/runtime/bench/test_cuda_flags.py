"""The bench's CUDA flags: each turns one setting on or off, is validated before anything runs, and is
recorded in results.json; torch.compile's mode (max-autotune on CUDA, default on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import UserError
from runtime.bench.__main__ import build_parser, config_from, main
from runtime.bench.config import BenchConfig
from runtime.bench.engines import compile_mode
from tests.helpers import strict_load


def _config(*argv: str) -> BenchConfig:
    return config_from(build_parser().parse_args(list(argv)))


def test_defaults_on_cuda() -> None:
    c = _config()
    assert (c.cuda_graph, c.prefer_nhwc, c.fp16_io, c.cudnn_max_workspace) == ("auto", False, False, True)
    assert (c.placement_audit, c.torch_compile_mode, c.cudnn_conv_algo_search) == (False, "auto", "EXHAUSTIVE")
    s = c.session_config("cuda", 4)
    assert s.cuda_graph is False, "graphs are captured per batch by the engine, not by the shared session"
    assert s.cudnn_max_workspace and not s.prefer_nhwc


def test_each_flag_turns_its_setting() -> None:
    c = _config("--cuda-graph", "--nhwc", "--fp16-io", "--no-cudnn-max-workspace", "--placement-audit")
    assert (c.cuda_graph, c.prefer_nhwc, c.fp16_io, c.cudnn_max_workspace, c.placement_audit) == (
        "on",
        True,
        True,
        False,
        True,
    )
    s = c.session_config("cuda", 4)
    assert s.prefer_nhwc and not s.cudnn_max_workspace
    assert _config("--no-cuda-graph").cuda_graph == "off"
    assert _config("--torch-compile-mode", "default").torch_compile_mode == "default"


def test_contradicting_graph_flags_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["--cuda-graph", "--no-cuda-graph", "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cuda-graph and --no-cuda-graph contradict" in err[0]
    assert not (tmp_path / "b").exists()


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(UserError, match="cuda_graph must be one of auto, on, off"):
        BenchConfig(cuda_graph="sometimes").validate()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--torch-compile-mode", "fastest"])


def test_torch_compile_mode_by_device() -> None:
    assert compile_mode("auto", "cuda") == "max-autotune"
    assert compile_mode("auto", "cpu") == "default"
    assert compile_mode("reduce-overhead", "cuda") == "reduce-overhead"
    with pytest.raises(UserError, match="unknown torch.compile mode"):
        compile_mode("fastest", "cpu")


def test_the_settings_are_recorded(arts: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--models", "lenet5", "--batch-size", "1", "--engines", "onnxruntime", "--no-roofline", "--no-parity"]
    args += ["--min-samples", "3", "--min-seconds", "0", "--warmup", "1", "--threads", "1"]
    assert main([*args, "--nhwc", "--no-cuda-graph", "--output", str(out), "--artifacts-dir", str(arts)]) == 0
    config = strict_load(out / "results.json")["config"]
    assert config["prefer_nhwc"] is True and config["cuda_graph"] == "off" and config["cudnn_max_workspace"] is True
