"""Reinforced teacher selection (Yuan et al., AAAI 2021): a Bernoulli policy per (example, teacher), REINFORCE.

For example j and teacher k the policy reads the state

    s_jk = [ p_t,k(x_j) (C) ; CE(y_j, p_t,k) (1) ; p_s(x_j) (C) ; CE(y_j, p_s) (1) ; one-hot(k) (K) ]

(all detached; the CE terms are 0 for an unlabelled example) and selects the teacher with probability
pi(s_jk) = sigmoid(MLP(s_jk)), a_jk ~ Bernoulli(pi(s_jk)). After the student's update on the batch, each labelled
example earns the reward r_j and the policy takes one Adam step on

    loss = -(1/B) Σ_j Σ_k (r_j - mean_j' r_j') log pi(a_jk | s_jk),   log pi(a|s) = a log pi(s) + (1-a) log(1-pi(s)),
    r_j  = CE(y_j, p_s(x_j)) - CE(y_j, p_s'(x_j))     (how much the update lowered the student's loss on x_j)

where p_s is the student before the update and p_s' after it, both with the same dropout draw.

Deviations from the paper, on purpose:
* the state omits the teachers' [CLS] vectors: their widths differ across teachers, and a state built from
  outputs only is cheap and works with teacher outputs labelled once before training;
* the reward is the drop of the student's gold CE on x_j, not the paper's -(CE + KD) after the update. The KD
  part would reward selecting no teacher at all (KD over an empty set is 0); the CE level alone, -CE(y_j, p_s'),
  mostly measures how hard x_j is, a spread across the batch that the baseline does not remove and that buries
  the effect of the actions (measured: with -CE the SST-2 policy kept selecting every teacher about half the
  time, a corrupted one included; the drop learns to skip the teacher that is wrong on x_j, see the tests).
  The batch mean is the baseline.
Known weakness: an example with no teacher selected gets only the gold half of the loss, so its CE drops less and
the reward at first favours selecting more teachers, whichever they are. A policy that drifts to selecting all of
them explores little afterwards (one SST-2 seed of three in bench/multi_teacher.py: equal weights again).
The policy has its own optimizer and lives outside DistillModule (not wrapped by DDP, not in checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.data.encoding import IGNORE_LABEL


def policy_states(teacher_logits: Tensor, student_logits: Tensor, labels: Tensor | None) -> Tensor:
    """The states ``[B, K, 2C + 2 + K]`` of every (example, teacher) pair, float32, detached."""
    teacher = teacher_logits.detach().float()
    student = student_logits.detach().float()
    batch, teachers, classes = teacher.shape
    log_pt = F.log_softmax(teacher, dim=-1)
    log_ps = F.log_softmax(student, dim=-1)
    ce_t = torch.zeros(batch, teachers, device=teacher.device)
    ce_s = torch.zeros(batch, device=teacher.device)
    if labels is not None:
        labelled = labels != IGNORE_LABEL
        gold = labels.long().clamp_min(0)
        gold_t = log_pt.gather(-1, gold.view(-1, 1, 1).expand(-1, teachers, 1))[..., 0]
        ce_t = torch.where(labelled.unsqueeze(1), -gold_t, 0.0)
        ce_s = torch.where(labelled, -log_ps.gather(-1, gold.view(-1, 1))[:, 0], 0.0)
    one_hot = torch.eye(teachers, device=teacher.device).expand(batch, teachers, teachers)
    return torch.cat(
        [
            log_pt.exp(),
            ce_t.unsqueeze(-1),
            log_ps.exp().unsqueeze(1).expand(batch, teachers, classes),
            ce_s.view(batch, 1, 1).expand(batch, teachers, 1),
            one_hot,
        ],
        dim=-1,
    )


def improvement_rewards(before: Tensor, after: Tensor, labels: Tensor) -> Tensor:
    """r_j = CE(y_j, before_j) - CE(y_j, after_j) from student logits ``[B, C]``; NaN where y_j is IGNORE_LABEL."""
    gold = labels.long().clamp_min(0)
    drop = F.cross_entropy(before.float(), gold, reduction="none") - F.cross_entropy(
        after.float(), gold, reduction="none"
    )
    return torch.where(labels != IGNORE_LABEL, drop, float("nan"))


class TeacherPolicy(nn.Module):
    """pi(s) = sigmoid(W2 tanh(W1 s + b1) + b2), trained by REINFORCE with its own Adam."""

    def __init__(self, num_labels: int, num_teachers: int, hidden_size: int, lr: float, seed: int = 0) -> None:
        super().__init__()
        self.num_teachers = num_teachers
        self.net = nn.Sequential(
            nn.Linear(2 * num_labels + 2 + num_teachers, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1)
        )
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        # Its own random stream: sampling actions must not shift the student's dropout masks or batch order.
        self.generator = torch.Generator().manual_seed(seed)

    def logits(self, states: Tensor) -> Tensor:
        """``[B, K]`` logits of pi (the policy computes in float32, also under mixed precision)."""
        device = states.device.type
        with torch.autocast(device_type=device, enabled=False):
            return self.net(states.float()).squeeze(-1)

    @torch.no_grad()
    def sample(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """Actions a ~ Bernoulli(pi(s)) (float 0/1, ``[B, K]``) and their log-probabilities log pi(a|s)."""
        logits = self.logits(states)
        draws = torch.rand(logits.shape, generator=self.generator).to(logits.device)
        actions = (draws < torch.sigmoid(logits)).float()
        return actions, -F.binary_cross_entropy_with_logits(logits, actions, reduction="none")

    def reinforce(self, states: Tensor, actions: Tensor, rewards: Tensor) -> float:
        """One policy-gradient step with the batch-mean baseline; returns the policy loss.

        ``rewards`` is ``[B]``; NaN marks an example without a reward (unlabelled), left out of the step.
        """
        keep = ~torch.isnan(rewards)
        if int(keep.sum()) < 2:  # with one example the baselined reward is 0: nothing to learn
            return 0.0
        states, actions, rewards = states[keep], actions[keep], rewards[keep].float()
        advantage = rewards - rewards.mean()
        with torch.enable_grad():
            log_pi = -F.binary_cross_entropy_with_logits(self.logits(states), actions, reduction="none")
            loss = -(advantage.unsqueeze(1) * log_pi).sum(1).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        return float(loss.detach())
