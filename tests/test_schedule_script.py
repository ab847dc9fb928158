"""scripts/schedule.py entry points: JSON graph, one network, a tiny sweep, bad input."""

import importlib
import json
import os

import pytest

from spikepipe_jax.schedule import (CommModel, graph_from_json, graph_to_json, lower_bound,
                                    placements_from_json, random_graph, schedule_violations)
from spikepipe_jax import experiments as script


def _check_methods(result):
    top = graph_from_json(result["graph"])
    comm = CommModel(**result["comm"])
    for name, entry in result["methods"].items():
        g = graph_from_json(entry["graph"]) if "graph" in entry else top
        pls = placements_from_json(entry["placements"])
        assert schedule_violations(g, pls, entry["period"], result["processors"], comm) == [], name
        assert isinstance(entry["period"], int) and all(isinstance(p.start, int) for p in pls)


def test_graph_json(tmp_path):
    g = random_graph(3, 30, back_edges=5)
    obj = graph_to_json(g)
    for e in obj["edges"]:  # "distance" defaults to 0
        if e["distance"] == 0:
            del e["distance"]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(obj))
    res = script.schedule_one(str(tmp_path / "out"), graph_path=str(path), processors=3)
    saved = json.loads((tmp_path / "out" / "schedules.json").read_text())
    assert saved["methods"].keys() == {"spikepipe"}  # baselines do not apply to this graph
    assert saved["lower_bound"] == lower_bound(g, 3) == res["lower_bound"]
    assert saved["lower_bound"] <= saved["methods"]["spikepipe"]["period"] <= 1.1 * saved["lower_bound"]
    _check_methods(saved)
    assert os.path.getsize(tmp_path / "out" / "gantt.png") > 1000


def test_training_graph_json_gets_baselines(tmp_path):
    from spikepipe_jax.schedule import graph_from_tasks, toy_training_tasks
    path = tmp_path / "train.json"
    path.write_text(json.dumps(graph_to_json(graph_from_tasks(toy_training_tasks(4, seed=2)))))
    res = script.schedule_one(str(tmp_path / "out"), graph_path=str(path), processors=3, gantt=False)
    m = res["methods"]
    assert set(m) == {"spikepipe", "spikepipe_layerpipe", "pipedream_1f1b", "gpipe", "zb_h1"}
    # unpipelined graph as given: one iteration per loop, the whole iteration is the bound
    assert m["spikepipe"]["period"] == res["lower_bound"] and m["spikepipe"]["delays"] == [0] * 4
    assert m["spikepipe_layerpipe"]["period"] <= m["pipedream_1f1b"]["period"] < m["spikepipe"]["period"]
    _check_methods(res)


def test_one_network(tmp_path):
    config = importlib.import_module("configs.fc_small").get_config("smoke")
    res = script.schedule_one(str(tmp_path), config=config, processors=2, rows=32, cols=32, dataflow="ws",
                         gantt=False)
    assert set(res["methods"]) == {"spikepipe", "spikepipe_nosplit", "pipedream_1f1b", "gpipe", "zb_h1"}
    _check_methods(json.loads((tmp_path / "schedules.json").read_text()))
    for entry in res["methods"].values():
        assert len(entry["delays"]) == 2
    assert res["methods"]["gpipe"]["delays"] == [0, 0]
    assert res["methods"]["spikepipe"]["period"] <= res["methods"]["pipedream_1f1b"]["period"]


def test_tiny_sweep(tmp_path):
    summary = script.schedule_sweep(str(tmp_path), nets=["fc_small"], processors=[2, 3], arrays=[(32, 32)],
                               dataflows=["ws"])
    rows = (tmp_path / "sweep.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("net,array")
    md = (tmp_path / "sweep.md").read_text()
    assert "| fc_small |" in md and "x 1F1B" in md
    s = summary["fc_small"]
    assert s["cases"] == 2 and s["speedup_vs_pipedream_1f1b"]["mean"] > 1.0
    assert s["speedup_vs_gpipe"]["max"] >= s["speedup_vs_gpipe"]["mean"]
    assert os.path.getsize(tmp_path / "speedup_vs_P.png") > 1000
    # the default budget: 0.5 % of the training bytes beyond 1F1B's, and its report
    saved = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert saved["comm_budget_pct"] == 0.5
    for key in ("speedup_nosplit_vs_pipedream_1f1b", "speedup_vs_pipedream_1f1b", "extra_comm_pct_vs_1f1b",
                "comm_time_overhead_pct"):
        assert {"mean", "max"} <= set(saved["summary"]["all"][key]), key
    assert saved["summary"]["all"]["extra_comm_pct_vs_1f1b"]["max"] <= 0.5
    assert saved["summary"]["all"]["extra_comm_pct_nosplit_vs_1f1b"]["max"] <= 0.5
    assert set(saved["tradeoff_by_net_and_p"]["fc_small"]) == {"2", "3"}
    assert os.path.getsize(tmp_path / "pareto.png") > 1000
    assert "comm_budget_pct" in rows[0] and "tradeoff" not in rows[0]  # nested curves stay in JSON


def test_no_budget_keeps_the_unbudgeted_scheduler(tmp_path):
    config = importlib.import_module("configs.fc_small").get_config("smoke")
    free = script.schedule_one(str(tmp_path / "a"), config=config, processors=3, rows=32, cols=32,
                               dataflow="ws", gantt=False, comm_budget_pct=None)
    tight = script.schedule_one(str(tmp_path / "b"), config=config, processors=3, rows=32, cols=32,
                                dataflow="ws", gantt=False, comm_budget_pct=0.0)
    assert "comm_budget" not in free and tight["comm_budget"]["pct"] == 0.0
    base = tight["methods"]["pipedream_1f1b"]["bytes_communicated"]
    for name in ("spikepipe", "spikepipe_nosplit"):
        assert tight["methods"][name]["bytes_communicated"] <= base
        assert free["methods"][name]["period"] <= tight["methods"][name]["period"]
    assert free["methods"]["spikepipe_nosplit"]["bytes_communicated"] > base


def test_bad_input(tmp_path):
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps({"tasks": [{"name": "a", "duration": 1}, {"name": "b", "duration": 2}],
                                "edges": [{"src": "a", "dst": "b"}, {"src": "b", "dst": "a"}]}))
    with pytest.raises(ValueError, match="zero delays"):
        script.schedule_one(str(tmp_path / "o"), graph_path=str(path), processors=2)
    path.write_text(json.dumps({"tasks": [{"name": "a", "duration": 1}], "edges": []}))
    with pytest.raises(ValueError, match="processors"):
        script.schedule_one(str(tmp_path / "o"), graph_path=str(path), processors=0)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        script.schedule_one(str(tmp_path / "o"), graph_path=str(path), processors=2)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_GRAPHS = {
    "cycle.json": json.dumps({"tasks": [{"name": "a", "duration": 1}, {"name": "b", "duration": 2}],
                              "edges": [{"src": "a", "dst": "b"}, {"src": "b", "dst": "a"}]}),
    "negative.json": json.dumps({"tasks": [{"name": "a", "duration": -1}], "edges": []}),
    "truncated.json": '{"tasks": [{"name": "a", "dur',
}


def _run_script(module, *args):
    import subprocess
    import sys
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,words", [
    (["--graph={d}/cycle.json"], ["zero delays", "b -> a -> b"]),
    (["--graph={d}/negative.json"], ["duration", "-1"]),
    (["--graph={d}/truncated.json"], ["truncated.json", "not valid JSON"]),
    (["--graph={d}/missing.json"], ["missing.json"]),
    (["--config=configs/nope.py"], ["--config=configs/nope.py", "No such file"]),
    (["--config=configs/fc_small.py:smoke", "--rows=0"], ["rows", "got 0"]),
    (["--config=configs/fc_small.py:smoke", "--cols=-4"], ["cols", "got -4"]),
    (["--config=configs/fc_small.py:smoke", "--config.nope=1"], ["unknown config key", "nope"]),
    (["--graph={d}/negative.json", "--processors=0"], ["--processors", "got 0"]),
    (["--sweep", "--sweep_processors=2,x"], ["--sweep_processors", "'x'"]),
    (["--sweep", "--sweep_nets=nope"], ["configs/nope.py"]),
    (["--sweep", "--sweep_arrays=32y32"], ["32y32"]),
    (["--graph={d}/negative.json", "--comm_time_budget_pct=fast"], ["--comm_time_budget_pct", "fast"]),
    (["--graph={d}/negative.json", "--comm_time_budget_pct=nan"], ["--comm_time_budget_pct", "nan"]),
    (["--graph={d}/negative.json", "--comm_budget_pct=nan"], ["--comm_budget_pct", "nan"]),
    ([], ["exactly one of --config"]),
])
def test_script_bad_input_is_one_error_line(tmp_path, args, words):
    """Every bad input of scripts.schedule ends with one ``error:`` line naming it, exit status 1."""
    for name, text in _GRAPHS.items():
        (tmp_path / name).write_text(text)
    res = _run_script("scripts.schedule", *(a.format(d=tmp_path) for a in args), f"--out={tmp_path}/o")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "o").exists()


def test_rows_zero_is_an_error_in_the_library(tmp_path):
    config = importlib.import_module("configs.fc_small").get_config("smoke")
    with pytest.raises(ValueError, match="rows must be a positive integer, got 0"):
        script.schedule_one(str(tmp_path), config=config, processors=2, rows=0, gantt=False)
