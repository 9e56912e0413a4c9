"""Online KD among peers (OKDHP-style aggregate, learned gate, DML): losses, ramp-up, PeerGroup, objective, runs."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import tiny_recipe
from torch import nn
from transformers import AutoModelForSequenceClassification

import kdlab
from kdlab.config import DistillConfig, OnlineConfig
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.engine.checkpoint import latest_checkpoint
from kdlab.errors import UserError
from kdlab.losses import (
    ensemble_logits,
    hard_ce,
    mutual_kd,
    mutual_mse,
    online_kd,
    online_mse,
    regression_mse,
    soft_kd,
)
from kdlab.methods.factory import build_objective
from kdlab.methods.online import OnlineObjective, rampup_weight
from kdlab.methods.stages import Stage
from kdlab.models.peers import PeerGroup, PeerOutput, peer_group, save_peers
from kdlab.taps import FeatureTaps

STAGE = Stage("online", (), True, 4)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def _softmax(z: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


# ------------------------------------------------------------------------------------------------- losses
def test_ensemble_is_mean_or_gate_weighted_logits():
    z = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]]])  # [B=1, N=3, C=2]
    assert torch.allclose(ensemble_logits(z), torch.tensor([[1.0, 1.0]]))
    gate = torch.tensor([[0.5, 0.25, 0.25]])
    assert torch.allclose(ensemble_logits(z, gate), torch.tensor([[0.5 + 0.75 - 0.25, 1.0 + 0.0 + 0.25]]))


def test_online_kd_by_hand():
    z = [[0.0, 1.0], [2.0, -1.0]]  # one example, two peers
    target = [0.5, 0.5]
    t = 2.0
    expected = t**2 * (_kl(_softmax(target, t), _softmax(z[0], t)) + _kl(_softmax(target, t), _softmax(z[1], t))) / 2
    got = online_kd(torch.tensor([z]), torch.tensor([target]), t)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mutual_kd_two_peers_is_the_two_kls():
    z = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    both = (soft_kd(z[:, 0], z[:, 1], 3.0) + soft_kd(z[:, 1], z[:, 0], 3.0)) / 2
    assert mutual_kd(z, 3.0).item() == pytest.approx(both.item(), rel=1e-6)
    # by hand on one example
    a, b = [0.3, -0.2, 1.0], [1.0, 0.0, 0.0]
    by_hand = (_kl(_softmax(b), _softmax(a)) + _kl(_softmax(a), _softmax(b))) / 2
    assert mutual_kd(torch.tensor([[a, b]]), 1.0).item() == pytest.approx(by_hand, rel=1e-6)


def test_zero_when_peers_agree_and_non_negative_otherwise():
    same = torch.tensor([[0.2, -1.0, 3.0]]).repeat(4, 1)[:, None].repeat(1, 3, 1)  # [4, 3, 3], all peers equal
    assert online_kd(same, ensemble_logits(same), 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert mutual_kd(same, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert online_mse(same[..., :1], ensemble_logits(same[..., :1])).item() == pytest.approx(0.0, abs=1e-7)
    assert mutual_mse(same[..., :1]).item() == pytest.approx(0.0, abs=1e-7)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        z = torch.randn(6, 3, 4, generator=gen) * 3
        gate = torch.softmax(torch.randn(6, 3, generator=gen), -1)
        assert online_kd(z, ensemble_logits(z, gate), 1.5).item() >= 0
        assert mutual_kd(z, 1.5).item() >= 0
        assert online_mse(z[..., :1], ensemble_logits(z[..., :1])).item() >= 0


def test_temperature_squared_scaling():
    gen = torch.Generator().manual_seed(2)
    z, e = torch.randn(4, 3, 5, generator=gen), torch.randn(4, 5, generator=gen)
    for t in (0.5, 2.0, 4.0):
        assert online_kd(z, e, t).item() == pytest.approx(t**2 * online_kd(z / t, e / t, 1.0).item(), rel=1e-5)
        assert mutual_kd(z, t).item() == pytest.approx(t**2 * mutual_kd(z / t, 1.0).item(), rel=1e-5)


def test_targets_are_detached():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, 5, generator=gen, requires_grad=True)
    target = torch.randn(4, 5, generator=gen, requires_grad=True)
    online_kd(z, target, 2.0).backward()
    assert target.grad is None and z.grad is not None
    regression_target = torch.randn(4, 1, requires_grad=True)
    online_mse(z[..., :1], regression_target).backward()
    assert regression_target.grad is None
    # DML: peer 0's gradient comes from its own KL only (peer 1 is a constant there)
    pair = torch.randn(4, 2, 5, generator=gen, requires_grad=True)
    mutual_kd(pair, 2.0).backward()
    first = pair[:, 0].detach().clone().requires_grad_(True)
    (soft_kd(first, pair[:, 1].detach(), 2.0) / 2).backward()
    assert torch.allclose(pair.grad[:, 0], first.grad, atol=1e-7)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(3, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    e = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    gate = torch.softmax(torch.randn(3, 3, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: online_kd(x, e, 2.0), (z,))
    assert torch.autograd.gradcheck(ensemble_logits, (z, gate))
    assert torch.autograd.gradcheck(lambda x: online_mse(x, e[:, :1]), (z[..., :1].detach().requires_grad_(True),))
    assert online_kd(z, e, 2.0).dtype == torch.float64
    # DML detaches each target peer, so its gradient is not the derivative of its value: for peer n it is the
    # derivative of the terms that teach n, u -> (1/N)(1/(N-1)) sum_{m != n} pair(u, z_m); checked by differences.
    pairs = ((lambda x: mutual_kd(x, 2.0), lambda u, t: soft_kd(u, t, 2.0)), (mutual_mse, regression_mse))
    for (loss, pair), width in zip(pairs, (4, 1), strict=True):
        peers = z[..., :width].detach().clone().requires_grad_(True)
        loss(peers).backward()
        for n in range(3):
            others = [peers[:, m].detach() for m in range(3) if m != n]
            teaching = lambda u, others=others, pair=pair: sum(pair(u, t) for t in others) / (3 * 2)  # noqa: E731
            u = peers[:, n].detach().clone().requires_grad_(True)
            assert torch.autograd.gradcheck(teaching, (u,))
            (expected,) = torch.autograd.grad(teaching(u), u)
            assert torch.allclose(peers.grad[:, n], expected, atol=1e-10)


def test_rampup_values():
    assert rampup_weight(0.0, 4.0) == pytest.approx(math.exp(-5.0))
    assert rampup_weight(2.0, 4.0) == pytest.approx(math.exp(-1.25))
    assert rampup_weight(4.0, 4.0) == 1.0
    assert rampup_weight(7.5, 4.0) == 1.0
    assert rampup_weight(0.0, 0.0) == 1.0  # R = 0: no ramp-up


# ------------------------------------------------------------------------------------------------- peers
class _Linear(nn.Module):
    """A peer: any model whose output has .logits."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.layer = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> PeerOutput:
        return PeerOutput(logits=self.layer(x), peer_logits=self.layer(x)[:, None])


def test_peer_group_runs_every_peer_and_gate_sums_to_one():
    group = peer_group(lambda i: _Linear(), OnlineConfig(peers=3, aggregate="learned"), num_labels=3, seed=7)
    x = torch.randn(5, 4)
    out = group(x=x)
    assert out.peer_logits.shape == (5, 3, 3)
    assert torch.equal(out.logits, group.peers[0](x=x).logits)
    for i, peer in enumerate(group.peers):
        assert torch.equal(out.peer_logits[:, i], peer(x=x).logits)
    assert out.gate is not None and out.gate.shape == (5, 3)
    assert torch.allclose(out.gate.sum(-1), torch.ones(5))
    assert torch.allclose(out.gate, torch.full((5, 3), 1 / 3))  # the gate starts as the plain mean
    with torch.no_grad():
        group.gate.net[2].weight.normal_()
    gate = group(x=x).gate
    assert torch.allclose(gate.sum(-1), torch.ones(5)) and (gate > 0).all()
    # peers from seeds seed + i differ; the same seed rebuilds the same peers
    assert not torch.equal(group.peers[0].layer.weight, group.peers[1].layer.weight)
    again = peer_group(lambda i: _Linear(), OnlineConfig(peers=3, aggregate="mean"), num_labels=3, seed=7)
    assert torch.equal(again.peers[2].layer.weight, group.peers[2].layer.weight) and again.gate is None
    # the Trainer calls the student through taps with no specs: the PeerOutput comes through unchanged
    feats, through = FeatureTaps(group, {}, stop_early=False)(x=x)
    assert feats == {} and isinstance(through, PeerOutput) and through.peer_logits.shape == (5, 3, 3)


def test_save_peers_layout(tmp_path):
    group = PeerGroup([_Linear(), _Linear()], 3, "mean")
    saved = []
    save_peers(group, tmp_path / "student", lambda model, path: saved.append((model, path)))
    assert saved[0] == (group.peers[0], tmp_path / "student")
    assert [path for _, path in saved[1:]] == [tmp_path / "peers" / "peer-0", tmp_path / "peers" / "peer-1"]
    assert saved[2][0] is group.peers[1]


# ------------------------------------------------------------------------------------------------- objective
def _objective(aggregate: str, alpha: float = 0.5, regression: bool = False, **online) -> OnlineObjective:
    cfg = DistillConfig(method="online", alpha=alpha, temperature=2.0, online={"aggregate": aggregate, **online})
    objective = build_objective(cfg, regression, 1 if regression else 3)
    assert isinstance(objective, OnlineObjective)
    return objective


def test_objective_sums_peer_terms_and_ensemble_loss():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(4, 3, 3, generator=gen)
    gate = torch.softmax(torch.randn(4, 3, generator=gen), -1)
    labels = torch.tensor([0, 2, 1, IGNORE_LABEL])
    objective = _objective("learned", ensemble_weight=0.7, rampup_epochs=2.0)
    objective.set_progress(STAGE, 0.25)  # one of the stage's 4 epochs done: c = exp(-5 (1 - 1/2)^2)
    c = math.exp(-1.25)
    step = objective(STAGE, None, PeerOutput(z[:, 0], z, gate), {}, None, {"labels": labels})
    e = ensemble_logits(z, gate)
    gold = [hard_ce(z[:3, n], labels[:3]) for n in range(3)]  # the unlabelled example is left out of gold terms
    expected = 0.5 * sum(gold) + 0.5 * c * 3 * online_kd(z, e, 2.0) + 0.7 * hard_ce(e[:3], labels[:3])
    assert step.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert step.parts["gold_2"].item() == pytest.approx(gold[2].item(), rel=1e-6)
    assert step.parts["rampup"].item() == pytest.approx(c)
    assert not objective.needs_teacher_logits(STAGE) and objective.needs_student_logits(STAGE)


def test_objective_mutual_and_regression():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(4, 2, 3, generator=gen)
    labels = torch.tensor([0, 1, 2, 1])
    step = _objective("mutual", alpha=0.3)(STAGE, None, PeerOutput(z[:, 0], z), {}, None, {"labels": labels})
    expected = 0.7 * (hard_ce(z[:, 0], labels) + hard_ce(z[:, 1], labels)) + 0.3 * 2 * mutual_kd(z, 2.0)
    assert step.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert "ensemble_gold" not in step.parts

    r = torch.randn(4, 3, 1, generator=gen)
    targets = torch.tensor([0.5, float("nan"), 1.0, 2.0])
    objective = _objective("mean", alpha=0.5, regression=True)
    step = objective(STAGE, None, PeerOutput(r[:, 0], r), {}, None, {"labels": targets})
    keep = ~torch.isnan(targets)
    gold = sum(((r[keep, n, 0] - targets[keep]) ** 2).mean() for n in range(3))
    kd = sum(((r[:, n, 0] - r[:, :, 0].mean(1)) ** 2).mean() for n in range(3)) / 3
    assert step.total.item() == pytest.approx((0.5 * gold + 0.5 * 3 * kd).item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------- runs
def _online_recipe(teacher: Path, out: Path, aggregate: str, peers: int = 2) -> dict:
    recipe = tiny_recipe(str(teacher), out, method="online", online={"peers": peers, "aggregate": aggregate})
    recipe["train"].update(epochs=1, checkpoint_every_steps=None)
    return recipe


@pytest.mark.slow
@pytest.mark.parametrize(("aggregate", "peers"), [("mean", 3), ("learned", 2), ("mutual", 2)])
def test_distill_online_end_to_end(tiny_teacher_dir, tmp_path, aggregate, peers):
    torch.set_num_threads(1)
    run = kdlab.distill(_online_recipe(tiny_teacher_dir, tmp_path / "run", aggregate, peers))
    assert run.result.finished
    student = AutoModelForSequenceClassification.from_pretrained(run.model_dir)  # a plain single model
    assert student.config.num_hidden_layers == 2
    assert (tmp_path / "run" / "peers" / "peer-1" / "config.json").is_file()
    assert not (tmp_path / "run" / "peers" / f"peer-{peers}").exists()
    peer0 = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "peers" / "peer-0")
    pairs = zip(student.state_dict().values(), peer0.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    assert train and all(f"gold_{n}" in train[0] for n in range(peers)) and "kd" in train[0]
    assert ("ensemble_gold" in train[0]) == (aggregate == "learned")


@pytest.mark.slow
def test_own_vocab_peers_differ_and_the_teacher_never_runs(tiny_teacher_dir, tmp_path, monkeypatch):
    import kdlab.commands.teacher_side as teacher_side

    def never(*args, **kwargs):
        raise AssertionError("online KD ran the teacher")

    monkeypatch.setattr(teacher_side, "label_outputs", never)  # labelled once (the own-vocab default)
    monkeypatch.setattr(teacher_side, "LiveTeacher", never)  # or at every step
    torch.set_num_threads(1)
    recipe = _online_recipe(tiny_teacher_dir, tmp_path / "run", "mean")
    recipe["student"] = {"kind": "bilstm", "vocab": "own", "lstm_hidden_size": 8, "embedding_dim": 8}
    recipe["train"]["max_steps"] = 2
    kdlab.distill(recipe)
    first, second = (load_file(tmp_path / "run" / "peers" / f"peer-{i}" / "model.safetensors") for i in (0, 1))
    assert first.keys() == second.keys()
    assert any(not torch.equal(first[key], second[key]) for key in first)  # seeds seed + i: other inits


@pytest.mark.slow
def test_resume_restores_peers_and_gate(tiny_teacher_dir, tmp_path):
    def recipe(out: Path, max_steps: int) -> dict:
        made = _online_recipe(tiny_teacher_dir, out, "learned")
        made["train"].update(max_steps=max_steps, checkpoint_every_steps=2)
        return made

    torch.set_num_threads(1)
    kdlab.distill(recipe(tmp_path / "straight", 4))
    assert not kdlab.distill(recipe(tmp_path / "halves", 2)).result.finished
    kdlab.distill(recipe(tmp_path / "halves", 4), resume=True)
    a = load_file(latest_checkpoint(tmp_path / "straight" / "checkpoints") / "model.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "halves" / "checkpoints") / "model.safetensors")
    assert a.keys() == b.keys() and any(key.startswith("student.gate.") for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("key", "override"),
    [
        ("cache.dir", "cache.dir=somewhere"),
        ("augment", "augment.perturb.copies=1"),
        ("teacher.label_once", "teacher.label_once=true"),
        ("distill.logit_loss", "distill.logit_loss=mse"),
        ("distill.online.ensemble_weight", "distill.online.ensemble_weight=0"),
    ],
)
def test_online_refuses_what_needs_a_teacher(tiny_teacher_dir, tmp_path, key, override):
    recipe = _online_recipe(tiny_teacher_dir, tmp_path / "run", "learned")
    with pytest.raises(UserError) as err:
        kdlab.distill(recipe, [override])
    assert err.value.key == key and err.value.fix
    assert not (tmp_path / "run").exists()


def test_cache_refuses_online(tiny_teacher_dir, tmp_path):
    recipe = _online_recipe(tiny_teacher_dir, tmp_path / "run", "mean")
    with pytest.raises(UserError) as err:
        kdlab.cache(recipe, [f"cache.dir={tmp_path / 'cache'}"])
    assert err.value.key == "distill.method" and "no teacher knowledge" in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_peers_cut_from_one_checkpoint_get_heads_of_their_own(tiny_teacher_dir):
    from types import SimpleNamespace

    from kdlab.commands.runs import _seeded
    from kdlab.config import load_recipe

    recipe = load_recipe(
        {
            "task": {"name": "sst2"},
            "teacher": {"model": str(tiny_teacher_dir)},
            "distill": {"method": "online", "online": {"peers": 2}},
        }
    )
    source = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir)
    group = _seeded(recipe, SimpleNamespace(num_labels=2), lambda: copy.deepcopy(source))
    first, second = group.peers
    assert not torch.equal(first.classifier.weight, second.classifier.weight)
    assert not torch.equal(first.classifier.weight, source.classifier.weight)
    torch.testing.assert_close(
        first.bert.encoder.layer[0].output.dense.weight, source.bert.encoder.layer[0].output.dense.weight
    )
