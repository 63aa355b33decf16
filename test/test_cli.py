import json

from snn_control.cli import main


def test_eval_writes_json_and_plots(tiny_run, tmp_path, capsys):
    out = tmp_path / "e" / "eval.json"
    assert main(["eval", str(tiny_run), "--episodes", "4", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["episodes"] == 4
    assert (tmp_path / "e" / "eval_reach.png").stat().st_size > 10_000
    assert (tmp_path / "e" / "eval_training.png").stat().st_size > 10_000
    assert "held-out goals" in capsys.readouterr().out


def test_clear_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: reacher\ntrain:\n  iteratons: 3\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "unknown key(s) ['iteratons']" in capsys.readouterr().err
    assert main(["train", "config/reacher_snn.yaml", "--set", "model.hidden=big", "--out", str(tmp_path / "r")]) == 2
    assert "model.hidden: expected an integer" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_results_table(tiny_run, tmp_path):
    from snn_control.results import results_table

    main(["eval", str(tiny_run), "--episodes", "4", "--out", str(tiny_run / "eval.json")])
    table = results_table([tiny_run])
    assert table.count("\n") == 2 and "| reacher |" in table and "| n/a | n/a |" in table  # no suite run
    e = json.loads((tiny_run / "eval.json").read_text())
    e["robustness"] = {"mean": {"success_rate": 0.9, "success_rate_2cm": 0.6},
                       "worst": {"plant": "payload_1kg", "success_rate": 0.8}}
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "eval.json").write_text(json.dumps(e))
    assert "| 90.0% / 60.0% | payload 1kg 80.0% |" in results_table([tmp_path / "suite"])


def test_bringup_keeps_discovery_on_this_host_unless_told(monkeypatch):
    """Bring-up starts its nodes with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST by default,
    and a range the user set is kept."""
    import subprocess

    from snn_control.nodes import bringup

    seen = []

    class FakePopen:
        def __init__(self, cmd, env=None):
            seen.append((cmd, env))

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    bringup.start_nodes(bringup.BringupOptions(teleop=False))
    assert seen and all(env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" for _, env in seen)
    seen.clear()
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    bringup.start_nodes(bringup.BringupOptions(teleop=False))
    assert all(env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" for _, env in seen)


def test_bringup_summarises_how_each_node_stopped():
    import subprocess
    import sys

    from snn_control.nodes.bringup import stop_nodes

    # The quiet node takes SIGINT as Python does by default, even when started from a shell
    # that left SIGINT ignored (a background job); the real nodes install their own handlers.
    quiet = ("import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "print('ready', flush=True); time.sleep(30)")
    procs = {"quiet": subprocess.Popen([sys.executable, "-c", quiet], stdout=subprocess.PIPE, text=True),
             "failing": subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])}
    procs["failing"].wait()
    assert procs["quiet"].stdout.readline() == "ready\n"
    line = stop_nodes(procs)
    assert line.startswith("stopped: ") and "failing exit 3" in line
    assert "quiet exit" in line  # SIGINT ends it: Python's KeyboardInterrupt
