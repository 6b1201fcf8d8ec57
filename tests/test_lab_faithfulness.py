"""The faithfulness experiment end to end on digits with tiny settings: the model trained here is
judged by the run path's noise-aware verdicts (verdicts.py), checked against scipy's t interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import t as student

from convlens.errors import ConvlensError
from convlens.lab import faithfulness, list_experiments, quick_options, run_experiment
from convlens.views.lab import experiment_figure, experiment_tables


def test_faithfulness_end_to_end_with_the_run_paths_verdicts(digits):
    assert "faithfulness" in list_experiments() and quick_options("faithfulness")["images"] == 10
    result = run_experiment("faithfulness", digits, epochs=2, images=20, methods=("grad-cam", "saliency"))
    assert result.images == 20 and set(result.spearman) == {"grad-cam", "saliency"}
    assert set(result.deletion) == {"grad-cam", "saliency", "random", "brightness"}
    assert result.fractions[0] == 0 and result.fractions[-1] == 1 and len(result.fractions) == 17
    for method, found in result.verdicts.items():
        assert -1 <= result.spearman[method] <= 1 and 0 <= result.deletion[method] <= 1
        deletion = found["deletion"]
        # the interval is Student's t on the per-image differences (map - random order), by scipy here
        assert deletion["images"] + deletion["blank"] == 20
        low, high = deletion["interval"]
        mean, half = deletion["difference"], (high - low) / 2
        assert low == pytest.approx(mean - half) and half > 0
        expected = "passes" if high < 0 else "fails" if low >= 0 else "inconclusive"
        assert deletion["verdict"] == expected
        line = result.verdict(method)
        assert line.startswith(f"{found['verdict']} on this model: deletion {expected} against random order")
        assert "95 % interval" in line or "no map" in line
    (table,) = experiment_tables("faithfulness", result)
    assert [row[0] for row in table.rows] == ["grad-cam", "saliency", "random", "brightness"]
    assert result.to_json()["deletion"]["random"] == pytest.approx(result.deletion["random"])
    assert experiment_figure("faithfulness", result) is not None


def test_a_small_margin_is_no_pass_when_the_noise_allows_either():
    """The older rule called a 0.004 margin "trust"; the interval of the same numbers straddles 0."""
    differences = np.array([-0.05, 0.04, -0.03, 0.03, -0.01])  # mean -0.004
    half = student.ppf(0.975, 4) * differences.std(ddof=1) / np.sqrt(5)
    from convlens.inspect.verdicts import mean_interval, verdict_below

    mean, low, high = mean_interval(differences)
    assert (low, high) == pytest.approx((differences.mean() - half, differences.mean() + half))
    assert verdict_below(low, high) == "inconclusive"
    entry = {"verdict": "inconclusive", "randomization": {"verdict": "passes", "spearman": 0.1},
             "deletion": {"verdict": "inconclusive", "difference": mean, "interval": [low, high]}}  # fmt: skip
    result = faithfulness.FaithfulnessResult(
        dataset="d", model="m", epochs=1, accuracy=0.9, images=5, step=4, fractions=[0, 1], curves={},
        deletion={"a": 0.1, "random": 0.104, "brightness": 0.2}, spearman={"a": 0.1}, spearman_per_stage={},
        seconds_per_method={}, verdicts={"a": entry},
    )  # fmt: skip
    assert result.verdict("a").startswith("inconclusive on this model: deletion inconclusive")


def test_faithfulness_bad_input(digits):
    with pytest.raises(ConvlensError, match="methods: unknown method 'lime'") as info:
        faithfulness.run(digits, epochs=1, methods=("lime",))
    assert info.value.parameter == "methods"
