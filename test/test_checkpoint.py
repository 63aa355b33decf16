import json
import shutil

import pytest
import torch

from snn_control.models import IOSpecMismatch
from snn_control.models.checkpoint import CheckpointError, load_model


def _copy(tiny_run, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("tensorboard", "replay.npz"))
    return dst


def test_round_trip_gives_identical_outputs(tiny_run):
    pred, pol, spec, cfg = load_model(tiny_run)
    again, pol2, _, _ = load_model(tiny_run)
    obs, goal = torch.randn(2, spec.obs_dim), torch.randn(2, spec.goal_dim)
    a1, _, _ = pol.step(obs, goal, pol.initial_state(2, obs))
    a2, _, _ = pol2.step(obs, goal, pol2.initial_state(2, obs))
    assert torch.equal(a1, a2)
    assert spec.task == "reacher" and spec.substeps == cfg.model.substeps
    assert spec.joint_names == ("joint1", "joint2")
    assert not torch.all(pred.delta_scale == 1)  # fitted to data and saved


def test_matching_spec_accepted_mismatch_refused_with_what_differs(tiny_run):
    load_model(tiny_run, {"joint_names": ["joint1", "joint2"], "control_period_s": 0.02})
    with pytest.raises(IOSpecMismatch, match=r"joint_names: checkpoint has \['joint1', 'joint2'\], expected \['a', 'b'\]"):
        load_model(tiny_run, {"joint_names": ["a", "b"]})
    with pytest.raises(IOSpecMismatch, match=r"control_period_s: checkpoint has 0.02, expected 0.001"):
        load_model(tiny_run, {"control_period_s": 0.001})


def test_missing_and_corrupt_checkpoints(tiny_run, tmp_path):
    with pytest.raises(CheckpointError, match="no such model directory"):
        load_model(tmp_path / "absent")
    model = _copy(tiny_run, tmp_path)
    (model / "model.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="model.pt: corrupt or not a weights file"):
        load_model(model)
    model = _copy(tiny_run, tmp_path / "b")
    (model / "io_spec.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="io_spec.json: corrupt"):
        load_model(model)
    model = _copy(tiny_run, tmp_path / "c")
    (model / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="config.yaml: missing"):
        load_model(model)


def test_weights_that_do_not_fit_the_config(tiny_run, tmp_path):
    model = _copy(tiny_run, tmp_path)
    cfg = (model / "config.yaml").read_text().replace("hidden: 48", "hidden: 40")
    (model / "config.yaml").write_text(cfg)
    with pytest.raises(CheckpointError, match="weights do not fit config.yaml"):
        load_model(model)


def test_pickled_code_is_not_executed(tiny_run, tmp_path):
    model = _copy(tiny_run, tmp_path)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('/tmp/snn_control_pwned', 'w').write('x')",))

    torch.save({"predictor": Evil(), "policy": {}}, model / "model.pt")
    with pytest.raises(CheckpointError, match="corrupt or not a weights file"):
        load_model(model)
    import os
    assert not os.path.exists("/tmp/snn_control_pwned")


def test_io_spec_file_is_readable_json(tiny_run):
    spec = json.loads((tiny_run / "io_spec.json").read_text())
    assert spec["action_scale"] == [1.0, 1.0] and spec["obs_names"][0] == "hand_x"


def test_nan_or_wrong_size_observation_refused_naming_the_entry(tiny_run):
    import numpy as np

    from snn_control.models import ObservationError

    _, _, spec, _ = load_model(tiny_run)
    obs = np.zeros((3, spec.obs_dim))
    spec.validate_observation(obs)
    obs[2, 7] = np.nan
    with pytest.raises(ObservationError, match=r"entry 'omega2' is nan \(row 2\)"):
        spec.validate_observation(obs)
    with pytest.raises(ObservationError, match="expected 8 entries"):
        spec.validate_observation(np.zeros((1, 6)))
