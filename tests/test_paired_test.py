"""The paired comparison of an initialisation against random, on fixed numbers."""

from __future__ import annotations

import math

import pytest

from models.downstream_metrics import paired_test, verdict, wilcoxon_smallest_p


def test_paired_t_and_wilcoxon_on_fixed_numbers() -> None:
    control = [0.10, 0.20, 0.30, 0.40, 0.50]
    values = [c + d for c, d in zip(control, [0.01, 0.02, 0.03, 0.04, 0.05], strict=True)]
    test = paired_test(values, control)
    # differences 0.01..0.05: mean 0.03, sample sd 0.0158114, t = 0.03 / (sd / sqrt 5) = 4.2426
    assert test["n"] == 5
    assert test["mean_diff"] == pytest.approx(0.03)
    assert test["t"] == pytest.approx(0.03 / (math.sqrt(2.5e-4) / math.sqrt(5)))
    assert test["p_t"] == pytest.approx(0.013236, abs=1e-5)  # t(4) two-sided, from tables
    # every difference positive: W- = 0, exact two-sided p = 2 / 2**5
    assert test["p_wilcoxon"] == pytest.approx(2 / 32)
    assert verdict(test) == "helps"
    assert verdict(paired_test(control, values)) == "hurts"


def test_noisy_or_degenerate_differences_give_no_difference() -> None:
    noisy = paired_test([0.5, 0.4, 0.6, 0.5, 0.45], [0.45, 0.5, 0.5, 0.55, 0.45])
    assert noisy["p_t"] > 0.05 and verdict(noisy) == "no difference"
    same = paired_test([0.3, 0.3], [0.3, 0.3])
    assert same["p_t"] == 1.0 and verdict(same) == "no difference"
    # one repeated difference (probe accuracies are multiples of 1/n): the embedded default's
    # benchmark once printed p = 0 and "helps" from two seeds of +0.03125 each
    repeated = paired_test([0.1875, 0.2578125], [0.15625, 0.2265625])
    assert math.isnan(repeated["p_t"]) and verdict(repeated) == "no difference"
    assert repeated["mean_diff"] == pytest.approx(0.03125) and repeated["p_wilcoxon"] == 0.5
    single = paired_test([0.3], [0.2])
    assert math.isnan(single["p_t"]) and verdict(single) == "no difference"
    with pytest.raises(ValueError, match="differ in length"):
        paired_test([0.1, 0.2], [0.1])


def test_wilcoxon_smallest_p_is_what_paired_test_gives_when_every_difference_has_one_sign() -> None:
    # hand-computed: of the 2^n sign patterns, "all positive" and "all negative" are the extremes
    assert wilcoxon_smallest_p(1) == 1.0
    assert wilcoxon_smallest_p(2) == 0.5
    assert wilcoxon_smallest_p(5) == 0.0625
    assert wilcoxon_smallest_p(7) == 2 / 128
    for n in (2, 3, 5, 8):  # distinct differences (no ties), all of one sign
        ups = [0.1 * (k + 1) for k in range(n)]
        assert paired_test(ups, [0.0] * n)["p_wilcoxon"] == pytest.approx(wilcoxon_smallest_p(n))
        downs = [-u for u in ups]
        assert paired_test(downs, [0.0] * n)["p_wilcoxon"] == pytest.approx(wilcoxon_smallest_p(n))
    with pytest.raises(ValueError, match="at least 1"):
        wilcoxon_smallest_p(0)
