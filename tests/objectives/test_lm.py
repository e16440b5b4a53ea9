"""The lm objective: a decoder trained from scratch on a text file, with paired seeds."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from paretune import ConfigError
from paretune.objectives import TrialContext, build_objective
from paretune.objectives.lm import LM, Diverged, LMSettings
from paretune.objectives.lm._data import load_corpus, train_windows
from paretune.objectives.lm._model import training_flops
from paretune.objectives.lm._settings import checked
from paretune.objectives.lm._train import Run

# A tiny model: widths of 16 and 32 (one and two heads of 16), a few steps.
TINY = {
    "width": 32,
    "base_width": 16,
    "head_dim": 16,
    "depth": 1,
    "sequence_length": 16,
    "batch_size": 4,
    "steps": 6,
    "eval_windows": 4,
    "evals": 2,
    "validation_fraction": 0.2,
}


@pytest.fixture
def corpus_file(tmp_path: Path) -> str:
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(80))
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def _lm(corpus_file: str, **settings: object) -> LM:
    return LM(**{**TINY, "data": [corpus_file], **settings})


def test_a_trial_returns_its_loss_and_costs_and_reports_curves(corpus_file: str) -> None:
    objective = _lm(corpus_file, seed=0)
    ctx = TrialContext(trial_number=0)
    result = objective({"learning_rate": 3e-3}, ctx)
    assert 0 < result["val_loss"] < math.log(256) + 1
    assert result["tokens"] == 6 * 4 * 16
    assert result["width"] == 32 and result["log2_lr"] == pytest.approx(math.log2(3e-3))
    assert [step for step, _ in ctx.history] == [3, 6]
    assert set(ctx.history[-1][1]) == {"val_loss", "train_loss", "lr"}
    assert ctx.history[-1][1]["val_loss"] == result["val_loss"]
    # 6 N D plus attention, with N the parameters outside the input embeddings.
    shape = objective.validated.shape(256)
    assert result["flops"] == training_flops(shape, int(result["non_embedding_params"]), 384)
    assert result["flops"] == 6 * (result["non_embedding_params"] + 1 * 16 * 32) * 384


def test_the_lm_type_is_registered_and_builds_from_settings(corpus_file: str) -> None:
    objective = build_objective("lm", {**TINY, "data": [corpus_file]})
    assert isinstance(objective, LM)
    assert [m.name for m in objective.metrics] == ["val_loss"]
    assert list(objective.space.names) == ["learning_rate"]


def test_same_seed_same_result_and_data_order_depends_on_the_seed_alone(corpus_file: str) -> None:
    first = _lm(corpus_file, seed=3)({}, TrialContext(trial_number=0))
    again = _lm(corpus_file, seed=3)({}, TrialContext(trial_number=9, seed=123))
    assert first["val_loss"] == again["val_loss"]
    corpus = load_corpus((corpus_file,), "bytes", 0.2)
    windows = {
        (width, kind): Run(
            checked({**TINY, "data": [corpus_file], "width": width, "parametrization": kind}),
            corpus,
            seed=3,
        ).windows
        for width in (16, 32)
        for kind in ("sp", "mup")
    }
    reference = train_windows(corpus, seed=3, steps=6, batch_size=4, length=16)
    for value in windows.values():
        np.testing.assert_array_equal(value, reference)
    assert not np.array_equal(
        reference, train_windows(corpus, seed=4, steps=6, batch_size=4, length=16)
    )


def test_paired_cells_share_their_initial_draws_across_parametrizations(corpus_file: str) -> None:
    corpus = load_corpus((corpus_file,), "bytes", 0.2)
    runs = {
        kind: Run(checked({**TINY, "data": [corpus_file], "parametrization": kind}), corpus, seed=5)
        for kind in ("sp", "mup")
    }
    sp, mup = (dict(runs[k].model.named_parameters()) for k in ("sp", "mup"))
    name = "model.layers.0.mlp.up_proj.weight"  # hidden: muP's std is SP's / sqrt(2)
    torch.testing.assert_close(mup[name], sp[name] / math.sqrt(2))
    torch.testing.assert_close(mup["model.embed_tokens.weight"], sp["model.embed_tokens.weight"])


def test_width_is_the_fidelity_when_asked(corpus_file: str) -> None:
    objective = _lm(corpus_file, width=64, width_fidelity=True)
    assert objective.width_at(0.5) == 32
    assert objective.width_at(0.1) == 16  # at least one head
    half = objective.at_fidelity(0.5)
    assert half({}, TrialContext(trial_number=0, budget=0.5))["width"] == 32
    with pytest.raises(ConfigError, match="width_fidelity"):
        _lm(corpus_file).at_fidelity(0.5)
    assert _lm(corpus_file).at_fidelity(1.0).fidelity == 1.0


def test_parameters_override_settings_and_schedules_come_from_a_spec(corpus_file: str) -> None:
    objective = _lm(
        corpus_file,
        seed=0,
        schedule={"type": "power", "warmup_fraction": 0.0, "lr_max": 0.004},
    )
    ctx = TrialContext(trial_number=0)
    result = objective({"width": 16, "output_multiplier": 2.0}, ctx)
    assert result["width"] == 16
    # A power schedule's value is the learning rate itself (learning_rate defaults to 1):
    # capped at lr_max while batch * a * n**b is above it.
    assert all(metrics["lr"] == pytest.approx(0.004) for _, metrics in ctx.history)
    with pytest.raises(ConfigError, match="no setting 'momentum'"):
        objective({"momentum": 0.9}, ctx)


def test_a_diverging_run_fails_with_its_step(corpus_file: str) -> None:
    objective = _lm(corpus_file, seed=0, max_grad_norm=None, steps=40, evals=1)
    with pytest.raises(Diverged, match="diverged"):
        objective({"learning_rate": 1e6, "init_std": 10.0}, TrialContext(trial_number=0))


@pytest.mark.parametrize(
    ("settings", "path", "match"),
    [
        ({"width": 40}, "width", "multiple of head_dim=16"),
        ({"steps": 5, "tokens": 100}, "tokens", "not both"),
        ({"parametrization": "umup"}, "parametrization", "'sp' or 'mup'"),
        ({"schedule": {"type": "wsd", "a": 1.0}}, "schedule.a", "unknown key"),
        ({"space": {"width2": {"type": "int", "low": 1, "high": 2}}}, "space.width2", "overrides"),
        ({"data": ["no/such/file.txt"]}, "data.0", "cannot find"),
    ],
)
def test_bad_settings_name_the_setting(
    corpus_file: str, settings: dict[str, object], path: str, match: str
) -> None:
    merged = {**TINY, "data": [corpus_file], **settings}
    with pytest.raises(ConfigError, match=match) as caught:
        LM(**merged)
    assert ".".join(map(str, caught.value.path)) == path


def test_tokens_set_the_steps(corpus_file: str) -> None:
    settings = LMSettings.model_validate({**TINY, "steps": None, "tokens": 1000})
    assert settings.total_steps == math.ceil(1000 / (4 * 16))


def test_each_files_tail_is_held_out(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("a" * 80 + "A" * 20)
    second.write_text("b" * 40 + "B" * 10)
    corpus = load_corpus((str(first), str(second)), "bytes", 0.2)
    assert bytes(corpus.train.astype(np.uint8)) == b"a" * 80 + b"b" * 40
    assert bytes(corpus.validation.astype(np.uint8)) == b"A" * 20 + b"B" * 10


def test_a_width_parameter_is_kept_without_a_budget(corpus_file: str) -> None:
    objective = _lm(corpus_file, width=64, width_fidelity=True, seed=0, steps=1)
    assert objective({"width": 16}, TrialContext(trial_number=0))["width"] == 16


def test_the_count_of_non_embedding_params_matches_the_trained_model(corpus_file: str) -> None:
    objective = _lm(corpus_file, seed=0, steps=1)
    result = objective({}, TrialContext(trial_number=0))
    assert objective.non_embedding_params() == result["non_embedding_params"]
    assert objective.non_embedding_params(16) < objective.non_embedding_params(32)


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"schedule": {"type": "constant"}, "decay_fraction": 0.1}, "decay_fraction"),
        ({"schedule": {"type": "cosine"}, "decay_fraction": 0.1}, "decay_fraction"),
        ({"warmup_fraction": 0.9, "decay_fraction": 0.2}, "schedule.decay_fraction"),
    ],
)
def test_schedule_overrides_are_checked_with_the_settings(
    corpus_file: str, settings: dict[str, object], path: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _lm(corpus_file, **settings)
    assert ".".join(map(str, caught.value.path)) == path


def test_a_candidate_reads_as_width_learning_rate_and_the_rest(corpus_file: str) -> None:
    objective = _lm(corpus_file, width=64)
    assert objective.describe({"learning_rate": 2.0**-8}) == "w64 lr2^-8"
    assert objective.describe({"learning_rate": 0.003, "width": 256, "seed": 1}) == (
        "w256 lr2^-8.38 s1"
    )
    assert objective.describe({"output_multiplier": 2.0, "width": 32}) == "w32 output_multiplier=2"


DYNAMIC_LR = {"actions": [0.5, 1.0, 2.0], "low": 1e-5, "high": 1e-1, "interval": 10}


def test_a_dynamic_learning_rate_is_held_without_a_decider_and_set_by_one(
    corpus_file: str,
) -> None:
    from paretune.search.dac import ScheduleDecider

    settings = {"seed": 0, "steps": 20, "evals": 2}
    static_ctx = TrialContext(trial_number=0)
    static = _lm(corpus_file, **settings)({"learning_rate": 3e-3}, static_ctx)
    dynamic = _lm(corpus_file, **settings, dynamic=DYNAMIC_LR)
    held_ctx = TrialContext(trial_number=0)
    held = dynamic({"learning_rate": 3e-3}, held_ctx)
    assert held["val_loss"] == static["val_loss"]
    assert [m["lr"] for _, m in held_ctx.history] == [m["lr"] for _, m in static_ctx.history]
    assert [d.state.step for d in held_ctx.decisions] == [0, 10]
    assert all(d.action is None and d.value == 3e-3 for d in held_ctx.decisions)
    assert math.isfinite(held_ctx.decisions[1].state.loss)
    assert math.isfinite(held_ctx.decisions[1].state.grad_norm)
    assert math.isfinite(held_ctx.decisions[1].state.update_ratio)

    halved_ctx = TrialContext(trial_number=0)
    halved_ctx.set_decider(ScheduleDecider((0, 10), (3e-3, 1.5e-3)).build(halved_ctx))
    halved = dynamic({"learning_rate": 3e-3}, halved_ctx)
    (s10, first), (s20, second) = halved_ctx.history
    (_, static_first), (_, static_second) = static_ctx.history
    assert (s10, s20) == (10, 20)
    assert first["lr"] == pytest.approx(static_first["lr"])
    assert second["lr"] == pytest.approx(static_second["lr"] / 2)
    assert halved["val_loss"] != static["val_loss"]


@pytest.mark.parametrize(
    ("dynamic", "path"),
    [
        ({"interval": 0}, "dynamic.interval"),
        ({"name": "momentum"}, "dynamic.name"),
        ({"speed": 2}, "dynamic.speed"),
        ({"actions": [1.0]}, "dynamic.actions"),
        ({"low": 0.1, "high": 0.01}, "dynamic.low"),
    ],
)
def test_bad_dynamic_settings_name_the_setting(
    corpus_file: str, dynamic: dict[str, object], path: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _lm(corpus_file, dynamic={**DYNAMIC_LR, **dynamic})
    assert ".".join(map(str, caught.value.path)) == path
