"""Multi-teacher KD: the weighted losses, confidence weights, the REINFORCE teacher policy, and distill end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import _save_tiny_bert
from torch import Tensor

import kdlab
from kdlab.config import load_recipe
from kdlab.data.encoding import IGNORE_LABEL
from kdlab.engine.ensemble import EnsembleSource
from kdlab.engine.teacher import TeacherSignals
from kdlab.errors import UserError
from kdlab.losses import confidence_weights, multi_teacher_kd, multi_teacher_mse, soft_kd
from kdlab.methods.multi_teacher import MultiTeacherObjective, _selection_where_wrong
from kdlab.methods.stages import Stage
from kdlab.methods.teacher_policy import TeacherPolicy, improvement_rewards, policy_states

FIXTURES = Path(__file__).parent / "fixtures"


def _softmax(row: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


# ------------------------------------------------------------------------------------------------- losses
def test_multi_teacher_kd_matches_a_hand_computation():
    s = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    t = [[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 3.0], [1.0, -1.0, 0.0]]]
    w = [[0.25, 0.75], [1.0, 0.0]]
    temp = 2.0
    expected = 0.0
    for j in range(2):
        q = _softmax(s[j], temp)
        for k in range(2):
            p = _softmax(t[j][k], temp)
            expected += w[j][k] * temp**2 * sum(pc * math.log(pc / qc) for pc, qc in zip(p, q, strict=True))
    expected /= 2
    got = multi_teacher_kd(torch.tensor(s), torch.tensor(t), torch.tensor(w), temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_one_teacher_with_weight_one_is_soft_kd():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    got = multi_teacher_kd(s, t.unsqueeze(1), torch.ones(5, 1), 3.0)
    assert torch.allclose(got, soft_kd(s, t, 3.0), atol=1e-6)


def test_zero_when_every_teacher_is_the_student_and_non_negative_otherwise():
    torch.manual_seed(1)
    s = torch.randn(6, 3)
    w = torch.rand(6, 2)
    assert multi_teacher_kd(s, torch.stack([s, s], 1), w, 2.0).abs().item() < 1e-6
    for seed in range(5):
        torch.manual_seed(seed)
        assert multi_teacher_kd(torch.randn(6, 3), torch.randn(6, 2, 3), torch.rand(6, 2), 1.5).item() >= 0


def test_temperature_squared_scaling():
    torch.manual_seed(2)
    s, t, w = torch.randn(4, 3), torch.randn(4, 2, 3), torch.rand(4, 2)
    unscaled = multi_teacher_kd(s, t, w, 4.0) / 16.0
    # T^2 KL at T = 4 divided by 16 is the plain weighted KL of the softened distributions
    log_q = torch.log_softmax(s / 4, -1).unsqueeze(1)
    log_p = torch.log_softmax(t / 4, -1)
    plain = (w * (log_p.exp() * (log_p - log_q)).sum(-1)).sum() / 4
    assert torch.allclose(unscaled, plain, atol=1e-6)


def test_rows_of_zero_weight_give_no_kd_but_still_count_in_the_mean():
    torch.manual_seed(3)
    s, t = torch.randn(4, 3), torch.randn(4, 2, 3)
    assert multi_teacher_kd(s, t, torch.zeros(4, 2), 2.0).item() == 0.0
    w = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    first = multi_teacher_kd(s[:1], t[:1], w[:1], 2.0)
    assert torch.allclose(multi_teacher_kd(s, t, w, 2.0), first / 4, atol=1e-7)


def test_gradcheck_float64():
    torch.manual_seed(4)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: multi_teacher_kd(a, b, w, 2.0), (s, t))
    r = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    rt = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: multi_teacher_mse(a, b, w), (r, rt))


def test_half_precision_inputs_compute_in_float32():
    s, t = torch.randn(2, 3).bfloat16(), torch.randn(2, 2, 3).bfloat16()
    assert multi_teacher_kd(s, t, torch.ones(2, 2), 2.0).dtype == torch.float32


def test_multi_teacher_mse_by_hand():
    s = torch.tensor([[1.0], [2.0]])
    t = torch.tensor([[[0.0], [3.0]], [[2.0], [1.0]]])
    w = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    expected = (0.5 * 1 + 0.5 * 4 + 0.2 * 0 + 0.8 * 1) / 2
    assert multi_teacher_mse(s, t, w).item() == pytest.approx(expected)
    assert multi_teacher_mse(s[:, 0], t[..., 0], w).item() == pytest.approx(expected)


def test_confidence_weights_by_hand_and_for_unlabelled_rows():
    t = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 3.0], [1.0, 0.0]]])
    labels = torch.tensor([0, -100])
    w = confidence_weights(t, labels)
    a, b = _softmax([2.0, 0.0])[0], 0.5  # gold class 0
    c, d = max(_softmax([0.0, 3.0])), max(_softmax([1.0, 0.0]))  # unlabelled: each teacher's max probability
    expected = torch.tensor([[a / (a + b), b / (a + b)], [c / (c + d), d / (c + d)]])
    assert torch.allclose(w, expected, atol=1e-6)
    assert torch.allclose(confidence_weights(t, None)[1], expected[1], atol=1e-6)
    assert torch.allclose(w.sum(1), torch.ones(2))


# ------------------------------------------------------------------------------------------------- objective
def _objective(mode: str, regression: bool = False, **extra) -> MultiTeacherObjective:
    distill = {"teachers": ["y"], "teacher_weights": mode, **extra}
    cfg = load_recipe({"task": {"name": "sst2"}, "teacher": {"model": "x"}, "distill": distill}).distill
    return MultiTeacherObjective(cfg, regression, num_labels=2)


def test_fixed_weights_are_normalised():
    objective = _objective("fixed", weights=[1.0, 3.0])
    torch.manual_seed(5)
    s, t = torch.randn(4, 2, requires_grad=True), torch.randn(4, 2, 2)
    out = objective._logit_term(s, TeacherSignals(extras={"ensemble": t}), torch.tensor([0, 1, 1, 0]))
    parts = out[1]
    assert parts["weight_t0"].item() == pytest.approx(0.25) and parts["weight_t1"].item() == pytest.approx(0.75)
    w = torch.tensor([[0.25, 0.75]]).expand(4, 2)
    assert parts["kd"].item() == pytest.approx(multi_teacher_kd(s, t, w, 2.0).item(), rel=1e-6)


def test_objective_mixes_gold_and_equal_weight_kd():
    objective = _objective("equal")
    torch.manual_seed(6)
    s, t, y = torch.randn(4, 2), torch.randn(4, 2, 2), torch.tensor([0, 1, -100, 1])
    total, _ = objective._logit_term(s, TeacherSignals(extras={"ensemble": t}), y)
    gold = torch.nn.functional.cross_entropy(s[y != -100], y[y != -100])
    kd = multi_teacher_kd(s, t, torch.full((4, 2), 0.5), 2.0)
    assert total.item() == pytest.approx((0.5 * gold + 0.5 * kd).item(), rel=1e-6)


def test_ensemble_source_serves_rows_by_item_index():
    logits = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 2, 3)
    source = EnsembleSource(None, {"train": logits})
    signals = source.signals(Stage("logits", (), True, 1), {}, [3, 1], "train")
    assert torch.equal(signals.extras["ensemble"], logits[[3, 1]])
    assert torch.equal(signals.logits, logits[[3, 1], 0])


# ------------------------------------------------------------------------------------------------- policy
def test_policy_states_layout():
    t, s = torch.randn(3, 2, 4), torch.randn(3, 4)
    states = policy_states(t, s, torch.tensor([1, -100, 0]))
    assert states.shape == (3, 2, 2 * 4 + 2 + 2)
    assert torch.allclose(states[..., :4].sum(-1), torch.ones(3, 2))
    assert states[1, :, 4].abs().sum() == 0 and states[1, :, 9].abs().sum() == 0  # unlabelled: CE terms 0
    assert states[0, 0, 4].item() == pytest.approx(-torch.log_softmax(t[0, 0], -1)[1].item(), rel=1e-6)
    assert torch.equal(states[:, :, -2:], torch.eye(2).expand(3, 2, 2))


def test_reinforce_raises_the_rewarded_teacher_and_lowers_the_other():
    """Reward is higher whenever teacher 0 is selected and teacher 1 is not."""
    torch.manual_seed(0)
    policy = TeacherPolicy(num_labels=2, num_teachers=2, hidden_size=8, lr=0.05, seed=0)
    states = policy_states(torch.randn(32, 2, 2), torch.randn(32, 2), torch.randint(0, 2, (32,)))
    before = torch.sigmoid(policy.logits(states)).mean(0)
    for _ in range(30):
        actions, log_probs = policy.sample(states)
        assert actions.shape == log_probs.shape == (32, 2) and bool((log_probs <= 0).all())
        policy.reinforce(states, actions, actions[:, 0] - actions[:, 1])
    after = torch.sigmoid(policy.logits(states)).mean(0)
    assert after[0] > before[0] + 0.1 and after[1] < before[1] - 0.1


def test_reinforce_skips_examples_without_reward():
    policy = TeacherPolicy(num_labels=2, num_teachers=2, hidden_size=4, lr=0.1)
    states = torch.randn(3, 2, 8)
    before = [p.clone() for p in policy.parameters()]
    policy.reinforce(states, torch.ones(3, 2), torch.tensor([1.0, float("nan"), float("nan")]))
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))


def test_improvement_rewards_by_hand():
    before = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    after = torch.tensor([[0.0, 1.0], [1.0, 0.0], [5.0, 5.0]])
    rewards = improvement_rewards(before, after, torch.tensor([1, 0, IGNORE_LABEL]))
    ce = lambda logits, y: -torch.log_softmax(logits, -1)[y]  # noqa: E731
    assert rewards[0].item() == pytest.approx((ce(before[0], 1) - ce(after[0], 1)).item())
    assert rewards[1].item() == pytest.approx((ce(before[1], 0) - ce(after[1], 0)).item()) and rewards[1] < 0
    assert torch.isnan(rewards[2])


def test_selection_where_wrong_by_hand():
    # teacher 0 right on rows 0, 1; teacher 1 wrong on rows 0, 1; row 2 unlabelled counts nowhere
    ensemble = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [2.0, 0.0]], [[0.0, 2.0], [0.0, 2.0]]])
    selected = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    parts = _selection_where_wrong(ensemble, selected, torch.tensor([0, 1, IGNORE_LABEL]))
    assert parts["wrong_t0"] == 0 and parts["select_wrong_t0"] == 0
    assert parts["wrong_t1"].item() == pytest.approx(2 / 3) and parts["select_wrong_t1"].item() == pytest.approx(1 / 3)


def test_the_policy_learns_to_skip_a_teacher_where_it_is_wrong():
    """A linear student on a 2-class toy task with three teachers: right, uninformative, and wrong on 40% of the
    examples (its logits flipped). Trained with the multi-teacher loss and the improvement reward, the policy
    selects the right teacher most, the uninformative one rarely, and the noisy one where it is right, not where
    it is wrong."""
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(0)
    w_true = torch.randn(20, 2, generator=data)
    student = torch.nn.Linear(20, 2)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    policy = TeacherPolicy(num_labels=2, num_teachers=3, hidden_size=32, lr=1e-3, seed=0)
    selected, noisy_when_wrong, noisy_when_right = torch.zeros(3), [], []
    for step in range(1200):
        x = torch.randn(32, 20, generator=data)
        logits = 2 * x @ w_true
        y = torch.distributions.Categorical(logits=logits).sample()
        flip = torch.rand(32, generator=data) < 0.4
        noisy = torch.where(flip[:, None], logits.flip(-1), logits)
        teachers = torch.stack([logits, 0.3 * torch.randn(32, 2, generator=data), noisy], 1)
        out = student(x)
        states = policy_states(teachers, out, y)
        actions, _ = policy.sample(states)
        weights = actions / actions.sum(1, keepdim=True).clamp_min(1)
        loss = 0.5 * F.cross_entropy(out, y) + 0.5 * multi_teacher_kd(out, teachers, weights, 2.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            policy.reinforce(states, actions, improvement_rewards(out.detach(), student(x), y))
        if step >= 600:
            selected += actions.mean(0) / 600
            noisy_when_wrong.append(actions[flip, 2].mean())
            noisy_when_right.append(actions[~flip, 2].mean())
    wrong, right = torch.stack(noisy_when_wrong).nanmean(), torch.stack(noisy_when_right).nanmean()
    assert selected[0] > 0.7 and selected[1] < 0.25, selected
    assert wrong < 0.2 and right > 0.5, (wrong, right)


# ------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory, minilm_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny_teacher_b")
    return _save_tiny_bert(folder, minilm_tokenizer, num_labels=2, problem_type="single_label_classification", seed=5)


def _recipe(teacher: Path, out: Path, teachers: list[str], **distill) -> dict:
    return {
        "task": {"name": "sst2", "root": str(FIXTURES), "max_length": 32},
        "teacher": {"model": str(teacher)},
        "student": {"kind": "shrink", "layers": [1, 3]},
        "distill": {"method": "vanilla", "temperature": 2.0, "alpha": 0.5, "teachers": teachers, **distill},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 1e-3,
            "log_every_steps": 1,
            "checkpoint_every_steps": None,
            "progress_bar": False,
        },
        "output": {"dir": str(out)},
    }


def _train_records(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "train"]


@pytest.mark.slow
def test_distill_with_two_teachers_equal_and_learned(tiny_teacher_dir, second_teacher, tmp_path):
    torch.set_num_threads(1)
    equal = kdlab.distill(_recipe(tiny_teacher_dir, tmp_path / "equal", [str(second_teacher)]))
    assert equal.result.finished and (tmp_path / "equal" / "student" / "config.json").is_file()
    records = _train_records(tmp_path / "equal")
    assert records and all(r["weight_t0"] == pytest.approx(0.5) == r["weight_t1"] for r in records)

    learned = kdlab.distill(
        _recipe(
            tiny_teacher_dir,
            tmp_path / "learned",
            [str(second_teacher)],
            teacher_weights="learned",
            policy={"lr": 0.01, "warmup_epochs": 1},
        )
    )
    assert learned.result.finished
    records = _train_records(tmp_path / "learned")
    assert all({"weight_t0", "weight_t1", "kd", "gold"} <= r.keys() for r in records)
    warm = [r for r in records if "select_t0" not in r]
    chosen = [r for r in records if "select_t0" in r]
    assert warm and all(r["weight_t0"] == pytest.approx(0.5) for r in warm)
    assert chosen and any(abs(r["weight_t0"] - r["weight_t1"]) > 1e-6 for r in chosen)
    assert all(0 <= r["select_wrong_t1"] <= r["wrong_t1"] <= 1 for r in chosen)


@pytest.mark.slow
def test_the_reward_pass_replays_the_training_dropout(tiny_teacher_dir, second_teacher, tmp_path, monkeypatch):
    """With a vanishing learning rate the student does not change, so the drop of its CE must be ~0 although
    dropout is on: the after-update forward draws the same masks as the training forward."""
    torch.set_num_threads(1)
    rewards: list[Tensor] = []
    original = TeacherPolicy.reinforce
    monkeypatch.setattr(TeacherPolicy, "reinforce", lambda self, s, a, r: rewards.append(r) or original(self, s, a, r))
    recipe = _recipe(
        tiny_teacher_dir,
        tmp_path / "run",
        [str(second_teacher)],
        teacher_weights="learned",
        policy={"warmup_epochs": 0},
    )
    recipe["train"].update(epochs=1, max_steps=3, lr=1e-12)
    kdlab.distill(recipe)
    assert len(rewards) == 3
    assert all(float(r.abs().max()) < 1e-5 for r in rewards), rewards


@pytest.mark.slow
def test_two_copies_of_the_teacher_equal_one_teacher(tiny_teacher_dir, tmp_path):
    """Equal weights over two identical teachers is single-teacher KD; internal matches keep the live teacher."""
    torch.set_num_threads(1)
    matches = [{"teacher": "bert.encoder.layer.3", "student": "bert.encoder.layer.1", "loss": "mse"}]
    runs = {}
    for name, teachers in (("one", []), ("two", [str(tiny_teacher_dir)])):
        recipe = _recipe(tiny_teacher_dir, tmp_path / name, teachers, method="internal", matches=matches)
        recipe["train"].update(epochs=1, max_steps=3)
        kdlab.distill(recipe)
        runs[name] = _train_records(tmp_path / name)
    for one, two in zip(runs["one"], runs["two"], strict=True):
        for key in ("loss", "kd", "gold", "match0_mse"):
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


# ------------------------------------------------------------------------------------------------- user errors
def test_fixed_weights_of_the_wrong_count_are_refused():
    with pytest.raises(UserError) as err:
        load_recipe(
            {
                "task": {"name": "sst2"},
                "teacher": {"model": "x"},
                "distill": {"teachers": ["y"], "teacher_weights": "fixed", "weights": [1.0, 2.0, 3.0]},
            }
        )
    assert "one weight per teacher" in str(err.value)


def test_confidence_and_learned_weights_are_refused_for_regression():
    for mode in ("confidence", "learned"):
        with pytest.raises(UserError) as err:
            _objective(mode, regression=True)
        assert err.value.key == "distill.teacher_weights"


def test_teachers_with_another_label_count_are_refused(tiny_teacher_dir, tmp_path, minilm_tokenizer):
    three = _save_tiny_bert(tmp_path / "three", minilm_tokenizer, 3, "single_label_classification", seed=2)
    with pytest.raises(UserError) as err:
        kdlab.distill(_recipe(tiny_teacher_dir, tmp_path / "out", [str(three)]))
    assert err.value.key == "distill.teachers[0]" and "3 outputs" in str(err.value) and "2 labels" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_teacher_cache_with_further_teachers_is_refused(tiny_teacher_dir, tmp_path):
    recipe = _recipe(tiny_teacher_dir, tmp_path / "out", [str(tiny_teacher_dir)])
    recipe["cache"] = {"dir": str(tmp_path / "cache")}
    for run in (kdlab.distill, kdlab.cache):
        with pytest.raises(UserError) as err:
            run(recipe)
        assert err.value.key == "cache.dir"
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
