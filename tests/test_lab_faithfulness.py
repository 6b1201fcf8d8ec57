"""The faithfulness experiment end to end on digits with tiny settings."""

from __future__ import annotations

import pytest

from convlens.errors import ConvlensError
from convlens.lab import faithfulness, list_experiments, quick_options, run_experiment
from convlens.views.lab import experiment_figure, experiment_tables


def test_faithfulness_end_to_end(digits):
    assert "faithfulness" in list_experiments() and quick_options("faithfulness")["images"] == 10
    result = run_experiment("faithfulness", digits, epochs=2, images=20, methods=("grad-cam", "saliency"))
    assert result.images == 20 and set(result.spearman) == {"grad-cam", "saliency"}
    assert set(result.deletion) == {"grad-cam", "saliency", "random", "brightness"}
    assert result.fractions[0] == 0 and result.fractions[-1] == 1
    for method in result.spearman:
        assert -1 <= result.spearman[method] <= 1 and 0 <= result.deletion[method] <= 1
        assert list(result.spearman_per_stage[method]) == ["fc", "conv2", "conv1"]
        assert result.verdict(method).split(":")[0] in ("trust", "use with care", "do not trust")
    (table,) = experiment_tables("faithfulness", result)
    assert [row[0] for row in table.rows] == ["grad-cam", "saliency", "random", "brightness"]
    assert result.to_json()["deletion"]["random"] == pytest.approx(result.deletion["random"])
    assert experiment_figure("faithfulness", result) is not None


def test_faithfulness_verdicts_and_bad_input(digits):
    result = faithfulness.FaithfulnessResult(
        dataset="d", model="m", epochs=1, accuracy=0.9, images=1, step=8, fractions=[0, 1],
        curves={}, deletion={"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.1, "random": 0.5, "brightness": 0.2},
        spearman={"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.9}, spearman_per_stage={}, seconds_per_method={},
    )  # fmt: skip
    assert result.verdict("a").startswith("trust")
    assert result.verdict("b").startswith("do not trust: depends on the model, but ranks pixels no better")
    assert result.verdict("c").startswith("use with care")
    assert result.verdict("d").startswith("do not trust: the map survives weight randomization")
    with pytest.raises(ConvlensError, match="methods: unknown method 'lime'") as info:
        faithfulness.run(digits, epochs=1, methods=("lime",))
    assert info.value.parameter == "methods"
