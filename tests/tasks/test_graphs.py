"""Graph tasks: karate_club node classification and the graph_epidemic temporal task."""
import json

import pytest
import torch

from ssmkit.cli.main import main
from ssmkit.models import BackboneConfig
from ssmkit.models.graph import GraphModel
from ssmkit.models.sequence_model import SequenceModel
from ssmkit.tasks import IGNORE, create_task
from ssmkit.tasks.graphs import I, R, S, EpidemicConfig, load_graph, simulate_sir, transition_probs


def test_karate_data_labels_and_features():
    task = create_task("karate_club")
    assert task.info.kind == "tag" and task.info.length == 34 and task.info.n_classes == 2
    assert task.graph.n_nodes == 34 and task.graph.n_edges == 78
    assert torch.bincount(task.labels).tolist() == [17, 17]
    assert task.labels[0] == 0 and task.labels[33] == 1  # Mr. Hi's club, the officer's club
    batch = next(task.batches("train", 32))
    assert batch.inputs.shape == (1, 34, 34) and torch.equal(batch.inputs[0], torch.eye(34))
    assert batch.targets.shape == (1, 34) and batch.mask is None
    for features, width in [("structural", 4), ("both", 38)]:
        t = create_task("karate_club", features=features)
        x = next(t.batches("val", 1)).inputs
        assert x.shape == (1, 34, width) and t.info.d_input == width
        assert (x >= 0).all() and (x <= 1).all() and x[..., -4:].amax(1).min() > 0


def test_karate_split_is_stratified_disjoint_and_fixed():
    task = create_task("karate_club", n_train_per_class=3, n_val=6, split_seed=1)
    split = task.split
    assert [len(split[k]) for k in ("train", "val", "test")] == [6, 6, 22]
    assert sorted(torch.cat(list(split.values())).tolist()) == list(range(34))
    assert torch.bincount(task.labels[split["train"]]).tolist() == [3, 3]
    for name, nodes in split.items():  # targets carry exactly the split's labels
        t = next(task.batches(name, 1, seed=5, epoch=2)).targets[0]
        assert torch.equal((t != IGNORE).nonzero().flatten(), nodes)
        assert torch.equal(t[nodes], task.labels[nodes])
    again = create_task("karate_club", n_train_per_class=3, n_val=6, split_seed=1)
    assert all(torch.equal(split[k], again.split[k]) for k in split)
    other = create_task("karate_club", n_train_per_class=3, n_val=6, split_seed=2)
    assert not torch.equal(split["train"], other.split["train"])


def test_epidemic_layout_and_dynamics():
    task = create_task("graph_epidemic", steps=5, n_eval=16)
    n, T = 34, 5
    batch = next(task.batches("val", 16))
    assert batch.inputs.shape == (16, T * n, 2) and batch.targets.shape == (16, T * n)
    x, y = batch.inputs.unflatten(1, (T, n)), batch.targets.unflatten(1, (T, n))
    assert torch.equal(x[:, 1:, :, 0], (y[:, :-1] == I).float())  # input at t+1 is the target at t
    assert torch.equal(x[0, 0, :, 1], task.graph.degree().float() / 17)
    assert (x[:, 0, :, 0].sum(1) == 1).all()  # one seed
    states = simulate_sir(task.graph, task.cfg, 64, torch.Generator().manual_seed(0))
    before, after = states[:, :-1], states[:, 1:]
    assert not ((before == R) & (after != R)).any()  # recovered stay recovered
    assert not ((before == S) & (after == R)).any()  # S -> I -> R


def test_epidemic_transitions_follow_the_probabilities():
    """Empirical rates of S -> I by number of infected neighbours and of I -> R match the model
    (4 standard errors)."""
    cfg = EpidemicConfig(steps=12, infect=0.3, recover=0.25)
    graph = load_graph("karate")[0]
    states = simulate_sir(graph, cfg, 400, torch.Generator().manual_seed(7))
    a = graph.adjacency()
    prev, nxt = states[:, :-1].flatten(0, 1), states[:, 1:].flatten(0, 1)
    k = (prev == I).float() @ a
    checks = [((prev == S) & (k == j), nxt == I, 1 - (1 - 0.3) ** j) for j in (1, 2, 3)]
    checks.append((prev == I, nxt == R, 0.25))
    for where, event, p in checks:
        m = int(where.sum())
        assert m > 200
        rate = float(event[where].float().mean())
        assert abs(rate - p) < 4 * (p * (1 - p) / m) ** 0.5, (rate, p, m)
    p = transition_probs(prev, a.double(), 0.3, 0.25)
    assert torch.allclose(p.sum(-1), torch.ones(()).double())


def test_epidemic_splits_are_deterministic_and_references_ordered():
    task = create_task("graph_epidemic", steps=4, n_train=20, n_eval=12)
    a = [b.targets for b in task.batches("train", 8, seed=1)]
    assert [t.shape[0] for t in a] == [8, 8, 4]
    assert all(torch.equal(x, y) for x, y in zip(a, [b.targets for b in task.batches("train", 8, seed=1)]))
    assert not torch.equal(a[0], next(task.batches("train", 8, seed=2)).targets)
    assert not torch.equal(a[0], next(task.batches("train", 8, seed=1, epoch=1)).targets)
    assert torch.equal(next(task.batches("test", 6, seed=1)).targets, next(task.batches("test", 6, seed=9)).targets)
    assert not torch.equal(next(task.batches("test", 6)).inputs, next(task.batches("val", 6)).inputs)
    ref = task.reference_accuracy("test", 6)
    assert 0.5 < ref["persistence"] < ref["oracle"] <= 1.0
    for name in ("les_miserables", "florentine", "davis"):
        t = create_task("graph_epidemic", graph=name, steps=2, n_eval=2)
        assert next(t.batches("test", 2)).inputs.shape == (2, 2 * t.graph.n_nodes, 2)


@pytest.mark.parametrize("name, cfg", [("karate_club", {}), ("graph_epidemic", {"steps": 3, "n_train": 4})])
@pytest.mark.parametrize("arch", ["graph", "sequence"])
def test_one_training_step(name, cfg, arch):
    task = create_task(name, **cfg)
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(d_model=8, n_layers=1, mixer="mamba"), arch=arch)
    assert isinstance(model, GraphModel if arch == "graph" else SequenceModel)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = next(task.batches("train", 4))
    before = [p.detach().clone() for p in model.parameters()]
    out = model(batch.inputs, mask=batch.mask)
    assert out.shape == (*batch.targets.shape, task.info.n_classes)
    loss = task.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), "every parameter takes part"
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if b.dim() > 1)
    acc = task.metrics(model(batch.inputs).detach(), batch)["accuracy"]
    assert acc[1] == int((batch.targets != IGNORE).sum())


def test_bad_task_configs_are_named():
    for name, cfg, field in [("karate_club", {"features": "pixels"}, "features"),
                             ("karate_club", {"n_train_per_class": 0}, "n_train_per_class"),
                             ("karate_club", {"n_val": 40}, "n_val"),
                             ("graph_epidemic", {"graph": "cora"}, "graph"),
                             ("graph_epidemic", {"infect": 0.0}, "infect"),
                             ("graph_epidemic", {"recover": 1.5}, "recover"),
                             ("graph_epidemic", {"steps": 0}, "steps"),
                             ("graph_epidemic", {"graph": "florentine", "n_seeds": 16}, "n_seeds")]:
        with pytest.raises(ValueError, match=f"'{field}'"):
            create_task(name, **cfg)
    with pytest.raises(TypeError, match="unknown config key"):
        create_task("karate_club", labels=3)
    with pytest.raises(ValueError, match="unknown split"):
        next(create_task("karate_club").batches("dev", 1))


TINY = ["--set", "d_model=8", "--set", "n_layers=1", "--set", "progress=false", "--set", "arch=graph"]


def test_cli_trains_and_evaluates_the_graph_architecture(tmp_path, capsys):
    out = tmp_path / "karate"
    assert main(["train", "--task", "karate_club", "--mixer", "mamba", "--set", "steps=3", "--set", "arch.order=bfs",
                 "--set", "arch.local=gnn", *TINY, "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["arch"] == "graph" and run["arch_cfg"] == {"order": "bfs", "local": "gnn"}
    assert "test accuracy" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out), "--split", "val"]) == 0
    assert "val accuracy" in capsys.readouterr().out
    out = tmp_path / "epidemic"
    assert main(["train", "--task", "graph_epidemic", "--mixer", "s4d", "--set", "steps=2", "--set", "batch_size=4",
                 "--set", "task.steps=3", "--set", "task.n_eval=4", "--set", "arch.temporal=time_nodes",
                 *TINY, "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--task", "karate_club", "--set", "arch=graph", "--set", "arch.order=zigzag"], "arch.order"),
    (["--task", "karate_club", "--set", "arch=graph", "--set", "arch.depth=2"], "valid arch keys"),
    (["--task", "copy_memory", "--set", "arch=graph", "--set", "steps=1"], "needs a graph task"),
], ids=["bad-order", "unknown-field", "not-a-graph-task"])
def test_cli_rejects_bad_graph_settings(args, message, capsys):
    assert main(["train", *args, "--set", "progress=false", "--out", "/nonexistent/never-written"]) == 2
    assert message in capsys.readouterr().err
