"""Recipe schema, overrides and stage schedules (no models needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlab.config import load_recipe
from kdlab.errors import UserError
from kdlab.methods.stages import build_stages, layer_groups

BASE = {"task": {"name": "sst2"}, "teacher": {"model": "minilm"}}

MATCHES = [
    {
        "teacher": "bert.encoder.layer.2.attention.self",
        "student": "bert.encoder.layer.0.attention.self",
        "loss": "attention_kl",
    },
    {"teacher": "bert.encoder.layer.2", "student": "bert.encoder.layer.0", "loss": "cosine", "tokens": "cls"},
    {"teacher": "bert.encoder.layer.5", "student": "bert.encoder.layer.1", "loss": "cosine", "tokens": "cls"},
]
STUDENT_ORDER = [
    "",
    "bert",
    "bert.embeddings",
    "bert.encoder",
    "bert.encoder.layer",
    "bert.encoder.layer.0",
    "bert.encoder.layer.0.attention",
    "bert.encoder.layer.0.attention.self",
    "bert.encoder.layer.1",
    "classifier",
]


def recipe(**sections):
    return load_recipe({**BASE, **sections})


def test_defaults_and_overrides_are_typed():
    r = load_recipe(BASE, ["train.lr=3e-5", "train.epochs=2", "distill.alpha=1", "train.mixed_precision=bf16"])
    assert r.train.lr == pytest.approx(3e-5)
    assert r.train.epochs == 2 and r.distill.alpha == 1.0 and r.train.mixed_precision == "bf16"


def test_override_into_list_entry():
    r = load_recipe({**BASE, "distill": {"method": "internal", "matches": MATCHES}}, ["distill.matches[1].weight=3"])
    assert r.distill.matches[1].weight == 3.0


@pytest.mark.parametrize(
    ("overrides", "key", "needle"),
    [
        (["train.epoch=2"], "train.epoch", "did you mean epochs"),
        (["train.lr=fast"], "train.lr", "valid number"),
        (["distill.alpha=1.5"], "distill.alpha", "less than or equal to 1"),
        (["distill.method=magic"], "distill.method", "vanilla"),
        (["teacher.model=null"], "teacher.model", "string"),
        (["train.batch_size=0"], "train.batch_size", "greater than 0"),
        (["bogus.key=1"], "bogus", "unknown key"),
    ],
)
def test_bad_values_name_the_key(overrides, key, needle):
    with pytest.raises(UserError) as err:
        load_recipe(BASE, overrides)
    assert err.value.key == key
    assert needle in err.value.message


def test_unknown_loss_lists_known_ones():
    bad = [{**MATCHES[0], "loss": "attention_kld"}]
    with pytest.raises(UserError) as err:
        recipe(distill={"method": "internal", "matches": bad})
    assert err.value.key == "distill.matches[0].loss"
    assert "attention_kl" in err.value.message


def test_method_and_matches_must_agree():
    with pytest.raises(UserError, match="needs at least one entry"):
        recipe(distill={"method": "sid"})
    with pytest.raises(UserError, match=r"ignores distill\.matches"):
        recipe(distill={"method": "vanilla", "matches": MATCHES})


def test_attention_match_cannot_select_cls():
    with pytest.raises(UserError, match="whole attention maps"):
        recipe(distill={"method": "internal", "matches": [{**MATCHES[0], "tokens": "cls"}]})


def test_override_syntax_errors():
    with pytest.raises(UserError, match="no '='"):
        load_recipe(BASE, ["train.lr"])
    with pytest.raises(UserError, match="has no item 3"):
        load_recipe({**BASE, "distill": {"method": "internal", "matches": MATCHES}}, ["distill.matches[3].weight=1"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserError) as err:
        load_recipe(tmp_path / "nope.yaml")
    assert err.value.key == "RECIPE"


def test_layer_groups_follow_student_layers():
    r = recipe(distill={"method": "pid", "matches": MATCHES})
    assert layer_groups(r.distill, STUDENT_ORDER) == [(0, 1), (2,)]


def test_pid_drops_earlier_layers_and_ends_on_logits():
    r = recipe(distill={"method": "pid", "matches": MATCHES, "stage_epochs": 2}, train={"epochs": 3})
    stages = build_stages(r.distill, r.train.epochs, STUDENT_ORDER)
    assert [(s.matches, s.use_logits, s.epochs) for s in stages] == [
        ((0, 1), False, 2),
        ((2,), False, 2),
        ((), True, 3),
    ]


def test_sid_stacks_layers_and_keeps_them_with_logits():
    r = recipe(distill={"method": "sid", "matches": MATCHES})
    stages = build_stages(r.distill, 4, STUDENT_ORDER)
    assert [(s.matches, s.use_logits) for s in stages] == [
        ((0, 1), False),
        ((0, 1, 2), False),
        ((0, 1, 2), True),
    ]


def test_internal_and_vanilla_are_one_stage():
    internal = recipe(distill={"method": "internal", "matches": MATCHES})
    assert [(s.matches, s.use_logits) for s in build_stages(internal.distill, 3, STUDENT_ORDER)] == [((0, 1, 2), True)]
    vanilla = recipe()
    assert [(s.matches, s.use_logits) for s in build_stages(vanilla.distill, 3, STUDENT_ORDER)] == [((), True)]


def test_explicit_stages_must_be_complete():
    partial = [{**MATCHES[0], "stage": 0}, MATCHES[1]]
    r = recipe(distill={"method": "pid", "matches": partial})
    with pytest.raises(UserError) as err:
        layer_groups(r.distill, STUDENT_ORDER)
    assert err.value.key == "distill.matches[1].stage"


def test_plateau_stages_are_marked():
    r = recipe(distill={"method": "sid", "matches": MATCHES, "stage_until": "plateau", "stage_epochs": 5})
    stages = build_stages(r.distill, 2, STUDENT_ORDER)
    assert [s.until_plateau for s in stages] == [True, True, False]
    assert [s.epochs for s in stages] == [5, 5, 2]


def test_overwrite_never_deletes_a_folder_kdlab_did_not_write(tmp_path):
    from kdlab.commands.build import prepare_output

    (tmp_path / "thesis.tex").write_text("years of work")
    r = load_recipe(BASE, [f"output.dir={tmp_path}", "output.overwrite=true"])
    with pytest.raises(UserError) as err:
        prepare_output(r, resume=False)
    assert err.value.key == "output.overwrite"
    assert (tmp_path / "thesis.tex").read_text() == "years of work"

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text("task: {}\n")
    assert prepare_output(load_recipe(BASE, [f"output.dir={run}", "output.overwrite=true"]), resume=False) == run


def test_empty_module_path_is_rejected():
    with pytest.raises(UserError) as err:
        recipe(distill={"method": "internal", "matches": [{**MATCHES[1], "teacher": ""}]})
    assert err.value.key == "distill.matches[0].teacher"


def test_every_shipped_config_is_a_valid_recipe():
    root = Path(__file__).parents[1]
    configs = sorted((root / "configs").rglob("*.yaml")) + sorted((root / "src" / "kdlab" / "recipes").glob("*.yaml"))
    assert len(configs) > 10
    for path in configs:
        load_recipe(path)


@pytest.mark.parametrize(
    ("change", "key", "needle"),
    [
        ({"tokens": "first:0"}, "distill.matches[0].tokens", "first:N"),
        ({"tokens": "middle:3"}, "distill.matches[0].tokens", "attention_no_sep:N"),
        ({"width": 0}, "distill.matches[0].width", "greater than 0"),
        ({"width": 1.5}, "distill.matches[0].width", "less than or equal to 1"),
        ({"width_mask": "magic"}, "distill.matches[0].width_mask", "importance"),
    ],
)
def test_bad_selections_name_the_key(change, key, needle):
    with pytest.raises(UserError) as err:
        recipe(distill={"method": "internal", "matches": [{**MATCHES[1], **change}]})
    assert err.value.key == key and needle in err.value.message


def test_attention_maps_are_not_selected_and_topk_is_for_kl():
    attention = {"teacher": "bert.encoder.layer.2.attention.self", "student": "bert.encoder.layer.0.attention.self"}
    with pytest.raises(UserError, match="width: 1"):
        recipe(distill={"method": "internal", "matches": [{**attention, "loss": "attention_kl", "width": 0.5}]})
    with pytest.raises(UserError, match="logit_topk"):
        recipe(distill={"method": "vanilla", "logit_loss": "mse", "logit_topk": 2})


def test_teacher_may_be_left_out_only_for_teacher_free_training():
    base = {k: v for k, v in BASE.items() if k != "teacher"}
    with pytest.raises(UserError) as err:
        load_recipe({**base, "teacher": {}})
    assert err.value.key == "teacher.model"
    free = load_recipe({**base, "teacher": {}, "student": {"kind": "pretrained", "model": "x"}, "cache": {"dir": "c"}})
    assert free.teacher.model is None
