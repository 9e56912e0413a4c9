"""Stage schedules: a method expands to a list of stages that the one training loop runs in order.

vanilla   one stage: logit loss (soft labels mixed with gold by alpha)
internal  one stage: logit loss + every match at once (Aguilar et al. 2020, "all layers at once")
pid       one stage per student layer, bottom-up, only that layer's matches (earlier ones dropped), then a final
          stage with the logit loss only (progressive internal distillation)
sid       same schedule, but each stage keeps the matches of the layers below (stacked), and the final stage adds
          the logit loss to all of them
none      one stage on gold labels only: no teacher (fine-tuning, or the "student alone" baseline)
annealing stage "anneal" (train.epochs) on annealed teacher logits, then stage "hard" (distill.hard_epochs) on gold
online    one stage: peers trained together, each taught by their aggregate (no pre-trained teacher)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdlab.config import DistillConfig
from kdlab.errors import UserError

_FIRST_INDEX = re.compile(r"^(.*?\.\d+)(?:\.|$)")


@dataclass(frozen=True)
class Stage:
    name: str
    matches: tuple[int, ...]
    use_logits: bool
    epochs: int
    until_plateau: bool = False


def build_stages(cfg: DistillConfig, epochs: int, student_module_order: list[str]) -> list[Stage]:
    """Expand the configured method into stages; ``epochs`` is the length of the (final) logit stage."""
    every = tuple(range(len(cfg.matches)))
    if cfg.method in ("none", "vanilla", "online"):
        return [Stage(cfg.method, (), True, epochs)]
    if cfg.method == "annealing":
        hard = [Stage("hard", (), True, cfg.hard_epochs)] if cfg.hard_epochs else []
        return [Stage("anneal", (), True, epochs), *hard]
    if cfg.method == "internal":
        return [Stage("internal", every, True, epochs)]
    groups = layer_groups(cfg, student_module_order)
    plateau = cfg.stage_until == "plateau"
    stages = []
    for k, group in enumerate(groups):
        active = group if cfg.method == "pid" else tuple(i for g in groups[: k + 1] for i in g)
        stages.append(Stage(f"layer{k + 1}", active, False, cfg.stage_epochs, plateau))
    final = () if cfg.method == "pid" else every
    stages.append(Stage("logits", final, True, epochs))
    return stages


def layer_groups(cfg: DistillConfig, student_module_order: list[str]) -> list[tuple[int, ...]]:
    """Group matches into bottom-up stages.

    An explicit ``stage`` on a match wins. Otherwise matches are grouped by the student layer they tap: the module
    path up to its first numeric component (``bert.encoder.layer.0.attention.self`` -> ``bert.encoder.layer.0``),
    ordered by where that module sits in the student's module order (bottom first).
    """
    if any(m.stage is not None for m in cfg.matches):
        missing = [i for i, m in enumerate(cfg.matches) if m.stage is None]
        if missing:
            raise UserError(
                "some matches have a stage and some do not",
                key=f"distill.matches[{missing[0]}].stage",
                fix="give every match a stage, or none of them (then they are grouped by student layer)",
            )
        order = sorted({m.stage for m in cfg.matches if m.stage is not None})
        return [tuple(i for i, m in enumerate(cfg.matches) if m.stage == s) for s in order]
    position = {path: n for n, path in enumerate(student_module_order)}
    keys: dict[str, list[int]] = {}
    for i, match in enumerate(cfg.matches):
        found = _FIRST_INDEX.match(match.student)
        keys.setdefault(found.group(1) if found else match.student, []).append(i)
    ordered = sorted(keys.items(), key=lambda item: position.get(item[0], len(position)))
    return [tuple(indices) for _, indices in ordered]
