"""The PEFT map on real studies of a PEFT space: the rows and sizes it extracts, where it
applies, the panels it draws."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from paretune.dashboards import StudyData, figure_family
from paretune.dashboards.figures import cost_metric
from paretune.objectives import Metric
from paretune.spaces.peft import ModelLayout, Projection, peft_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

H = 32
METRICS = (Metric("accuracy", "maximize"), Metric("trainable_percent", "minimize"))
NONE = {"serial_size": 0, "parallel_size": 0, "prefix_length": 0, "lora_rank": 0}
OFF = {f"layer_{i}": False for i in range(4)}


def layout(n_layers: int = 4) -> ModelLayout:
    """A BERT-like layout, 32 wide (what describe_model gives, without transformers)."""
    projections = (
        Projection("q", "attention.self.query", H, H),
        Projection("k", "attention.self.key", H, H),
        Projection("v", "attention.self.value", H, H),
        Projection("o", "attention.output.dense", H, H),
        Projection("ffn_in", "intermediate.dense", H, 2 * H),
        Projection("ffn_out", "output.dense", 2 * H, H),
    )
    return ModelLayout(
        family="bert", model_type="bert", n_layers=n_layers, hidden_size=H, n_heads=4,
        n_kv_heads=4, head_dim=8, ffn_size=2 * H, layers_path="encoder.layer",
        attention="attention.self", projections=projections, conv1d=False,
        backbone_params=100_000,
    )  # fmt: skip


def study_of(
    space: Any, trials: list[tuple[dict[str, Any], list[float]]], metrics: tuple[Metric, ...]
) -> StudyData:
    study = optuna.create_study(directions=[m.direction for m in metrics])
    for params, values in trials:
        checked = space.validate(params)
        study.add_trial(
            optuna.trial.create_trial(
                params=checked, distributions=space.distributions(checked), values=values
            )
        )
    return StudyData(name="peft", metrics=metrics, trials=tuple(study.get_trials()))


def layers(*on: int) -> dict[str, bool]:
    return {**OFF, **{f"layer_{i}": True for i in on}}


PEFT = {"method": "peft"}
LORA = {"lora_alpha_ratio": 2.0, "lora_targets": "qv"}
TRIALS = [
    # accuracy, trainable_percent
    ({**PEFT, **NONE, "serial_size": 4, **layers(0, 1, 2, 3)}, [0.80, 0.5]),
    ({**PEFT, **NONE, "prefix_length": 2, **layers(3)}, [0.70, 0.1]),
    (
        {**PEFT, **NONE, "parallel_size": 8, "lora_rank": 8, **LORA, **layers(1, 3)},
        [0.85, 1.2],
    ),
    ({**PEFT, **NONE, "serial_size": 32, **layers(0, 1, 2, 3)}, [0.75, 2.0]),  # dominated
    ({"method": "full"}, [0.90, 100.4]),
]


@pytest.fixture
def study() -> StudyData:
    return study_of(peft_space(layout(), full_finetune=True), TRIALS, METRICS)


def test_rows_are_the_front_by_cost_and_cells_the_sizes(study: StudyData) -> None:
    data = figure_family("peft").extract(study)
    assert (data.cost, data.layers, data.columns) == ("trainable_percent", 4, ["0", "1", "2", "3"])
    assert [r.number for r in data.rows] == [1, 0, 2]  # 0.1 %, 0.5 %, 1.2 %; 3 is dominated
    assert [r.number for r in data.full] == [4]
    assert data.rows[0].values == {"accuracy": 0.70, "trainable_percent": 0.1}
    assert data.modules == ("serial", "parallel", "prefix", "lora")
    assert data.sizes("serial").tolist() == [[0, 0, 0, 0], [4, 4, 4, 4], [0, 0, 0, 0]]
    assert data.sizes("prefix").tolist() == [[0, 0, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert data.sizes("parallel").tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 8, 0, 8]]
    assert data.sizes("lora").tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 8, 0, 8]]


def test_per_module_switches_and_per_layer_ranks() -> None:
    space = peft_space(
        layout(3), modules=("serial", "lora"), layer_selection="per_module",
        per_layer_lora_ranks=True,
    )  # fmt: skip
    params = {
        "serial_size": 2, "serial_layer_0": False, "serial_layer_1": True,
        "serial_layer_2": True, "lora": True, **LORA,
        "lora_rank_0": 4, "lora_rank_1": 0, "lora_rank_2": 16,
    }  # fmt: skip
    data = figure_family("peft").extract(study_of(space, [(params, [0.8, 0.3])], METRICS))
    assert data.layers == 3 and data.modules == ("serial", "lora")
    assert data.sizes("serial").tolist() == [[0, 2, 2]]
    assert data.sizes("lora").tolist() == [[4, 0, 16]]


def test_a_space_without_layer_selection_has_one_column() -> None:
    space = peft_space(layout(), modules=("serial", "prefix"), layer_selection="none")
    trials = [
        ({"serial_size": 8, "prefix_length": 0}, [0.8, 0.6]),
        ({"serial_size": 0, "prefix_length": 4}, [0.7, 0.2]),
    ]
    data = figure_family("peft").extract(study_of(space, trials, METRICS))
    assert (data.layers, data.columns) == (None, ["all layers"])
    assert data.sizes("serial").tolist() == [[0], [8]]
    assert data.sizes("prefix").tolist() == [[4], [0]]


def test_applies_only_to_studies_of_a_peft_space(study: StudyData) -> None:
    family = figure_family("peft")
    assert family.applies(study)
    plain = optuna.create_study(directions=["maximize", "minimize"])
    dist = optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    lora = optuna.distributions.CategoricalDistribution([4, 8])
    plain.add_trial(
        optuna.trial.create_trial(
            params={"learning_rate": 1e-3, "lora_rank": 8},
            distributions={"learning_rate": dist, "lora_rank": lora},
            values=[0.8, 0.5],
        )
    )
    # A `lora_rank` without the space's targets and alpha is not a PEFT space's parameter.
    assert not family.applies(StudyData(name="p", metrics=METRICS, trials=tuple(plain.trials)))
    only_full = study_of(peft_space(layout(), full_finetune=True), [TRIALS[4]], METRICS)
    assert not family.applies(only_full)  # nothing to map


def test_the_cost_is_the_trainable_share_else_the_last_minimised_metric() -> None:
    assert cost_metric(METRICS).name == "trainable_percent"
    two_costs = (Metric("loss", "minimize"), Metric("memory_gb", "minimize"))
    assert cost_metric(two_costs).name == "memory_gb"
    params_first = (Metric("trainable_params", "minimize"), Metric("loss", "minimize"))
    assert cost_metric(params_first).name == "trainable_params"
    assert cost_metric((Metric("a", "maximize"), Metric("b", "maximize"))).name == "b"


def test_draw_gives_a_heatmap_per_module_with_the_trials_as_rows(study: StudyData) -> None:
    family = figure_family("peft")
    fig = family.draw(family.extract(study))
    assert [(t.type, t.name) for t in fig.data] == [
        ("heatmap", "serial adapter"),
        ("heatmap", "parallel adapter"),
        ("heatmap", "prefix"),
        ("heatmap", "LoRA"),
    ]
    serial = fig.data[0]
    assert list(serial.y) == ["trial 1: 0.1", "trial 0: 0.5", "trial 2: 1.2"]  # with their cost
    assert math.isnan(serial.z[0][0]) and serial.z[1][0] == 2.0  # log2 of size 4
    assert serial.text[1][0] == (
        "trial 0, layer 0<br>serial adapter bottleneck 4<br>accuracy 0.8, trainable_percent 0.5"
    )
    assert fig.data[3].text[2][1].startswith("trial 2, layer 1<br>LoRA rank 8 (qv, alpha 16)")
    assert list(fig.layout.coloraxis.colorbar.ticktext) == ["2", "4", "8"]
    assert "trial 4" in fig.layout.annotations[-1].text  # full fine-tuning, named below
