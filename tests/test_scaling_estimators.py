"""Estimators: recovery, bootstrap CI calibration (CIs cover the truth), profile interval, bad input.
Run: .venv/bin/python -m pytest tests/test_scaling_estimators.py -q  (slow 100-trial calibration: -m slow)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.errors import UserError
from rlscale.scaling.estimators import LAWS, LogLinearKN, PowerLaw, PretrainRLLaw, SigmoidLaw, get_law
from rlscale.scaling.laws import k_of_n, loglinear_kn, power_law, pretrain_rl_accuracy, sigmoid_law

SIG_TRUE = {"R0": 0.1, "A": 0.8, "C_mid": 1e4, "B": 1.2}
POW_TRUE = {"a": 2.0, "b": -0.3}
LLK_TRUE = {"K_max": 0.3, "N0": 5e6, "e0": 1.0, "e1": -0.05}


def sigmoid_data(rng, n=40, noise=0.02):
    C = np.geomspace(1e2, 1e6, n)
    return C, sigmoid_law(C, **SIG_TRUE) + rng.normal(0, noise, n)


def power_data(rng, n=30, noise=0.05):
    x = np.geomspace(1e6, 1e10, n)
    return x, power_law(x, **POW_TRUE) * np.exp(rng.normal(0, noise, n))


def loglinear_data(rng, noise=0.02):
    Ns = np.repeat(np.geomspace(1e6, 1e8, 6), 12)
    X = np.tile(np.geomspace(1e2, 1e6, 12), 6)
    L = loglinear_kn(X, Ns, **LLK_TRUE) * np.exp(rng.normal(0, noise, X.size))
    return np.column_stack([X, Ns]), L


CASES = {
    "sigmoid": (SigmoidLaw, sigmoid_data, SIG_TRUE),
    "power": (PowerLaw, power_data, POW_TRUE),
    "loglinear-kn": (LogLinearKN, loglinear_data, LLK_TRUE),
}


def coverage(law: str, trials: int, n_bootstrap: int) -> dict[str, float]:
    cls, make, truth = CASES[law]
    hits = {k: 0 for k in truth}
    for t in range(trials):
        rng = np.random.default_rng(1000 + t)
        X, y = make(rng)
        est = cls(n_bootstrap=n_bootstrap, seed=t).fit(X, y)
        for k, v in truth.items():
            lo, hi = est.ci_[k]
            hits[k] += lo <= v <= hi
    return {k: h / trials for k, h in hits.items()}


@pytest.mark.parametrize("law", list(CASES))
def test_point_recovery(law):
    cls, make, truth = CASES[law]
    X, y = make(np.random.default_rng(0), noise=1e-4) if law != "loglinear-kn" else make(np.random.default_rng(0),
                                                                                         noise=1e-4)
    est = cls().fit(X, y)
    for k, v in truth.items():
        assert est.params_[k] == pytest.approx(v, rel=1e-2, abs=1e-3), k
    assert est.r2_ > 0.999
    np.testing.assert_allclose(est.predict(X), y, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("law", list(CASES))
def test_ci_calibration_fast(law):
    # 20 seeded trials: each parameter's 95% CI must cover the truth in >= 85% of them (the 100-trial version
    # below holds the >= 90% bar; with 20 trials one unlucky miss is 5%).
    cov = coverage(law, trials=20, n_bootstrap=80)
    assert all(c >= 0.85 for c in cov.values()), cov


@pytest.mark.slow
@pytest.mark.parametrize("law", list(CASES))
def test_ci_calibration_100_trials(law):
    cov = coverage(law, trials=100, n_bootstrap=200)
    assert all(c >= 0.90 for c in cov.values()), cov


def test_ci_narrows_with_data():
    rng = np.random.default_rng(3)
    widths = []
    for n in (20, 320):
        C = np.geomspace(1e2, 1e6, n)
        y = sigmoid_law(C, **SIG_TRUE) + rng.normal(0, 0.02, n)
        est = SigmoidLaw(n_bootstrap=100, seed=0).fit(C, y)
        widths.append(est.ci_["A"][1] - est.ci_["A"][0])
    assert widths[1] < widths[0] / 2


def test_profile_interval_for_A_covers_and_matches_bootstrap():
    rng = np.random.default_rng(5)
    C, y = sigmoid_data(rng, n=60)
    est = SigmoidLaw(n_bootstrap=200, seed=1, profile=True).fit(C, y)
    lo, hi = est.profile_ci_["A"]
    assert lo < est.params_["A"] < hi
    assert lo <= SIG_TRUE["A"] <= hi
    blo, bhi = est.ci_["A"]
    # both intervals estimate the same uncertainty: widths agree within a factor of 2
    assert 0.5 < (hi - lo) / (bhi - blo) < 2.0


def test_profile_interval_deviance_at_endpoints():
    """At each endpoint the refitted SSE is exactly exp(chi2_1(0.95)/n) times the minimum (brute-force check)."""
    from scipy import optimize, stats

    rng = np.random.default_rng(7)
    C, y = sigmoid_data(rng, n=50)
    est = SigmoidLaw(profile=True).fit(C, y)

    def sse_fixed_A(A):
        def r(u):
            return y - sigmoid_law(C, u[0], A, np.exp(u[1]), u[2])

        best = min((optimize.least_squares(r, [est.params_["R0"], np.log(est.params_["C_mid"]) + d,
                                               est.params_["B"]]) for d in (-0.5, 0, 0.5)),
                   key=lambda res: res.cost)
        return 2 * best.cost

    sse0 = sse_fixed_A(est.params_["A"])
    crit = stats.chi2.ppf(0.95, 1)
    for A in est.profile_ci_["A"]:
        assert len(y) * np.log(sse_fixed_A(A) / sse0) == pytest.approx(crit, rel=2e-2)


def test_group_bootstrap_resamples_whole_groups():
    rng = np.random.default_rng(2)
    C = np.tile(np.geomspace(1e2, 1e6, 15), 6)
    groups = np.repeat(np.arange(6), 15)
    offsets = rng.normal(0, 0.05, 6)[groups]  # run-level effect: a row bootstrap would understate the spread
    y = sigmoid_law(C, **SIG_TRUE) + offsets + rng.normal(0, 0.005, C.size)
    by_group = SigmoidLaw(n_bootstrap=150, seed=0).fit(C, y, groups)
    by_row = SigmoidLaw(n_bootstrap=150, seed=0).fit(C, y)
    w = lambda e: e.ci_["A"][1] - e.ci_["A"][0]  # noqa: E731
    assert w(by_group) > 1.5 * w(by_row)


def test_bootstrap_is_seeded():
    C, y = sigmoid_data(np.random.default_rng(0))
    a = SigmoidLaw(n_bootstrap=30, seed=4).fit(C, y).ci_
    b = SigmoidLaw(n_bootstrap=30, seed=4).fit(C, y).ci_
    c = SigmoidLaw(n_bootstrap=30, seed=5).fit(C, y).ci_
    assert a == b and a != c


def test_power_law_with_offset():
    x = np.geomspace(1, 1e4, 40)
    y = power_law(x, 3.0, -0.5, 0.2)
    est = PowerLaw(offset=True).fit(x, y)
    assert est.params_["a"] == pytest.approx(3.0, rel=1e-3)
    assert est.params_["b"] == pytest.approx(-0.5, rel=1e-3)
    assert est.params_["c"] == pytest.approx(0.2, rel=1e-3)


def test_pretrain_rl_recovery():
    rng = np.random.default_rng(0)
    Cp = np.repeat(np.geomspace(1e18, 1e21, 6), 6)
    Cr = np.tile(np.geomspace(1e15, 1e18, 6), 6)
    truth = {"lo": 0.05, "hi": 0.9, "a": 0.8, "b": 0.5, "c": -0.8 * np.log(1e19) - 0.5 * np.log(1e16)}
    y = pretrain_rl_accuracy(Cp, Cr, **truth) + rng.normal(0, 0.005, Cp.size)
    est = PretrainRLLaw(n_bootstrap=50).fit(np.column_stack([Cp, Cr]), y)
    for k in ("lo", "hi", "a", "b"):
        assert est.params_[k] == pytest.approx(truth[k], rel=0.05, abs=0.01), k
    assert est.params_["c"] == pytest.approx(truth["c"], rel=0.02)
    np.testing.assert_allclose(est.predict(np.column_stack([Cp, Cr])), pretrain_rl_accuracy(Cp, Cr, **truth),
                               atol=0.01)
    # a stored-params predictor (no fit) reproduces the fitted predictions
    fresh = PretrainRLLaw()
    np.testing.assert_allclose(fresh.predict(np.column_stack([Cp, Cr]), est.params_),
                               est.predict(np.column_stack([Cp, Cr])), rtol=1e-10)


@pytest.mark.parametrize("cls", [SigmoidLaw, PowerLaw, LogLinearKN, PretrainRLLaw, LAWS["chinchilla"]])
def test_jacobian_matches_finite_differences(cls):
    rng = np.random.default_rng(0)
    d = len(cls.variables)
    X = np.exp(rng.uniform(1, 10, (12, d)))
    est = cls()
    F = est._prepare(X)
    p = len(est.param_names)
    theta = rng.uniform(0.2, 1.5, p)
    _, J = est._model(theta, F)
    for j in range(p):
        h = np.zeros(p)
        h[j] = 1e-6
        num = (est._model(theta + h, F)[0] - est._model(theta - h, F)[0]) / 2e-6
        np.testing.assert_allclose(J[:, j], num, rtol=1e-5, atol=1e-7)


def test_k_of_n_saturation():
    assert k_of_n(1e12, 0.3, 5e6) == pytest.approx(0.3, rel=1e-5)
    assert k_of_n(5e6, 0.3, 5e6) == pytest.approx(0.15)


# --- bad input ---------------------------------------------------------------------------------------------------
def test_too_few_points():
    with pytest.raises(UserError, match="needs at least 5 points, got 4"):
        SigmoidLaw().fit([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])


def test_non_positive_compute():
    with pytest.raises(UserError, match="C: 1 non-positive"):
        SigmoidLaw().fit([0, 2, 3, 4, 5, 6], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])


def test_nan_metric():
    with pytest.raises(UserError, match="y: 1 NaN"):
        SigmoidLaw().fit([1, 2, 3, 4, 5, 6], [0.1, np.nan, 0.3, 0.4, 0.5, 0.6])


def test_power_needs_positive_y():
    with pytest.raises(UserError, match="non-positive"):
        PowerLaw().fit([1, 2, 3, 4], [1, 2, -3, 4])


def test_unknown_law_lists_valid():
    with pytest.raises(UserError, match="sigmoid, power"):
        get_law("nope")
