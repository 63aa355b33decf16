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
    assert table.count("\n") == 2 and "| reacher |" in table
