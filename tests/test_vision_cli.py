"""``cityedge vision ...`` through the real entry point: render a video, detect in it, check a config,
run the cameras for a few seconds; errors are sentences with exit codes, never tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cityedge.cli import main


def test_render_then_detect_then_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "street.avi"
    assert main(["vision", "render", str(video), "--frames", "45", "--seed", "4", "--rate", "3"]) == 0
    truth = json.loads(Path(str(video) + ".json").read_text())
    assert len(truth["frames"]) == 45 and video.stat().st_size > 10_000
    capsys.readouterr()

    assert main(["vision", "detect", str(video), "--json", "--max-frames", "45"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert len(lines) == 45
    seen = sum(len(ln["detections"]) for ln in lines)
    expected = sum(len(f) for f in truth["frames"])
    assert expected > 0 and 0.7 * expected <= seen <= 1.3 * expected

    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"""
[vision]
enabled = true
[[vision.camera]]
name = "north"
source = "{video.name}"
fps = 30
[[vision.camera.zone]]
name = "all"
polygon = [[0, 0], [640, 0], [640, 480], [0, 480]]
""")
    assert main(["vision", "check-config", "--config", str(cfg)]) == 0
    assert "1 camera(s)" in capsys.readouterr().out
    assert main(["vision", "run", "--config", str(cfg), "--seconds", "3"]) == 0
    out = capsys.readouterr()
    events = [json.loads(ln) for ln in out.out.splitlines()]
    assert any(e["type"] == "zone_enter" and e["source"] == "cam:north" for e in events)
    status = json.loads(out.err.strip().splitlines()[-1])["status"]["north"]
    assert status["frames"] >= 40


def test_errors_are_sentences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[vision]\nthreads = 99\n")
    assert main(["vision", "check-config", "--config", str(cfg)]) == 78
    err = capsys.readouterr().err
    assert f"error: {cfg}: vision.threads: must be between 1 and 16" in err and "Traceback" not in err
    assert main(["vision", "detect", str(tmp_path / "none.jpg")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["vision", "detect", str(cfg), "--model", str(tmp_path / "m.tflite")]) == 1
    assert "model file" in capsys.readouterr().err
