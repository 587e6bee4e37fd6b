"""One estimator per scaling law, scikit-learn style: settings in __init__, `fit(X, y, groups=None)` returns self,
`predict(X)`, fitted attributes end in `_` (`params_`, `ci_`, `r2_`, `rmse_`), `summary()`.

Fitting: the Huber loss (delta = `huber_delta`) of residuals in the law's fit space (log y for power / log-linear /
Chinchilla, y for the sigmoid and the pretrain x RL law), summed over points, minimised by L-BFGS-B with analytic
gradients and bounds, from the best few points of a start grid. Uncertainty: percentile bootstrap over groups (runs;
every row is its own group when `groups` is None), seeded, each resample warm-started from the full fit; and for the
sigmoid, a profile-likelihood interval for the asymptote A (Gaussian deviance n log(SSE(A) / SSE_min) <= chi2_1).

X is an array (n,) or (n, d) with the law's `variables` as columns. Registry `LAWS`: name -> class.
Tests: tests/test_scaling_estimators.py, tests/test_scaling_chinchilla.py.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np
from scipy import optimize, stats

from rlscale.errors import UserError
from rlscale.scaling.laws import expit, huber, huber_grad


@contextlib.contextmanager
def one_blas_thread():
    """Run with one BLAS thread (threadpoolctl): L-BFGS-B and small least-squares problems call BLAS on tiny vectors,
    where OpenBLAS's thread pool costs milliseconds per call on a contended machine (measured: 50x slower fits)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


class LawEstimator:
    """Shared machinery; subclasses define the parameterisation (theta), bounds, starts, and the model + Jacobian."""

    name = ""
    variables: tuple[str, ...] = ()  # roles of X columns
    positive: tuple[bool, ...] = ()  # which X columns must be > 0
    param_names: tuple[str, ...] = ()
    fit_space = "y"
    y_positive = False
    default_delta = 0.05
    n_top_starts = 6
    lbfgs_options: dict = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10}

    def __init__(self, huber_delta: float | None = None, n_bootstrap: int = 0, ci_level: float = 0.95,
                 seed: int = 0):
        self.huber_delta = huber_delta
        self.n_bootstrap = n_bootstrap
        self.ci_level = ci_level
        self.seed = seed

    # --- to implement -------------------------------------------------------------------------------------------
    def _prepare(self, X: np.ndarray) -> dict:
        """Precompute features (logs) for the model; called once per data set."""
        raise NotImplementedError

    def _model(self, theta: np.ndarray, F: dict, idx=None) -> tuple[np.ndarray, np.ndarray]:
        """Fit-space prediction (n,) and Jacobian (n, p) at theta."""
        raise NotImplementedError

    def _bounds(self, F: dict, z: np.ndarray) -> list[tuple[float, float]]:
        raise NotImplementedError

    def _grid(self, F: dict, z: np.ndarray) -> np.ndarray:
        """Start points (k, p)."""
        raise NotImplementedError

    def _to_params(self, theta: np.ndarray) -> dict[str, float]:
        return dict(zip(self.param_names, map(float, theta)))

    # --- shared -------------------------------------------------------------------------------------------------
    @property
    def delta_(self) -> float:
        return float(self.default_delta if self.huber_delta is None else self.huber_delta)

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        d = len(self.variables)
        if X.ndim != 2 or X.shape[1] != d:
            raise UserError(f"law '{self.name}' needs X with {d} column(s) ({', '.join(self.variables)}), "
                            f"got shape {X.shape}")
        for j, var in enumerate(self.variables):
            if not np.all(np.isfinite(X[:, j])):
                raise UserError(f"{var}: {int((~np.isfinite(X[:, j])).sum())} NaN/inf value(s); drop or fix them")
            if self.positive[j] and np.any(X[:, j] <= 0):
                raise UserError(f"{var}: {int((X[:, j] <= 0).sum())} non-positive value(s); "
                                f"law '{self.name}' takes log({var}) and needs {var} > 0")
        return X

    def _check_y(self, y, n: int) -> np.ndarray:
        y = np.asarray(y, dtype=float).ravel()
        if y.shape[0] != n:
            raise UserError(f"y has {y.shape[0]} values but X has {n} rows")
        if not np.all(np.isfinite(y)):
            raise UserError(f"y: {int((~np.isfinite(y)).sum())} NaN/inf value(s); drop or fix them")
        if self.y_positive and np.any(y <= 0):
            raise UserError(f"y: {int((y <= 0).sum())} non-positive value(s); law '{self.name}' fits log(y)")
        return y

    def _to_z(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.fit_space == "log y" else y

    def _from_z(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z) if self.fit_space == "log y" else z

    def _objective(self, theta, F, z, delta):
        zhat, J = self._model(theta, F)
        r = z - zhat
        # einsum, not @: a BLAS matvec spawns threads that crawl on a contended machine
        return float(huber(r, delta).sum()), -np.einsum("i,ij->j", huber_grad(r, delta), J)

    def _minimise(self, F, z, starts, bounds) -> tuple[np.ndarray, float]:
        delta = self.delta_
        best, best_f = None, math.inf
        for x0 in starts:
            x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
            with np.errstate(all="ignore"):
                res = optimize.minimize(self._objective, x0, args=(F, z, delta), jac=True, method="L-BFGS-B",
                                        bounds=bounds, options=self.lbfgs_options)
            if np.isfinite(res.fun) and res.fun < best_f:
                best, best_f = res.x, float(res.fun)
        if best is None:
            raise UserError(f"law '{self.name}': the fit did not converge from any start; check the data")
        return best, best_f

    def _multi_start(self, F, z, bounds) -> tuple[np.ndarray, float]:
        grid = self._grid(F, z)
        lo = np.array([b[0] for b in bounds])
        hi = np.array([b[1] for b in bounds])
        grid = np.clip(grid, lo, hi)
        with np.errstate(all="ignore"):
            vals = np.array([self._objective(g, F, z, self.delta_)[0] for g in grid])
        vals = np.where(np.isfinite(vals), vals, np.inf)
        order = np.argsort(vals)[: self.n_top_starts]
        return self._minimise(F, z, grid[order], bounds)

    def fit(self, X, y, groups=None) -> LawEstimator:
        with one_blas_thread():
            return self._fit(X, y, groups)

    def _fit(self, X, y, groups=None) -> LawEstimator:
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        p = len(self.param_names)
        if X.shape[0] <= p:
            raise UserError(f"law '{self.name}' has {p} parameters and needs at least {p + 1} points, "
                            f"got {X.shape[0]}")
        F = self._prepare(X)
        z = self._to_z(y)
        bounds = self._bounds(F, z)
        self.theta_, self.loss_ = self._multi_start(F, z, bounds)
        self.n_points_ = int(X.shape[0])
        self.x_range_ = [[float(X[:, j].min()), float(X[:, j].max())] for j in range(X.shape[1])]
        zhat, _ = self._model(self.theta_, F)
        resid = z - zhat
        self.residuals_ = resid
        self.rmse_ = float(np.sqrt(np.mean(resid**2)))
        sst = float(np.sum((z - z.mean()) ** 2))
        self.r2_ = float(1.0 - np.sum(resid**2) / sst) if sst > 0 else float("nan")
        self.params_ = self._to_params(self.theta_)
        self.ci_ = {}
        self.bootstrap_params_ = np.empty((0, p))
        if self.n_bootstrap > 0:
            self._bootstrap(X, z, groups, bounds)
        self._after_fit(F, z, bounds)
        return self

    def _after_fit(self, F, z, bounds) -> None:
        pass

    def _bootstrap(self, X, z, groups, bounds) -> None:
        n = X.shape[0]
        if groups is None:
            members = None
            n_groups = n
        else:
            groups = np.asarray(groups)
            if groups.shape[0] != n:
                raise UserError(f"groups has {groups.shape[0]} values but X has {n} rows")
            _, inv = np.unique(groups, return_inverse=True)
            order = np.argsort(inv, kind="stable")
            counts = np.bincount(inv)
            members = np.split(order, np.cumsum(counts)[:-1])
            n_groups = len(members)
            if n_groups < 2:
                raise UserError(f"bootstrap over groups needs at least 2 groups, got {n_groups}")
        rng = np.random.default_rng(self.seed)
        samples = np.full((self.n_bootstrap, len(self.param_names)), np.nan)
        for b in range(self.n_bootstrap):
            pick = rng.integers(0, n_groups, n_groups)
            idx = pick if members is None else np.concatenate([members[g] for g in pick])
            Fb = self._prepare(X[idx])
            try:
                theta, _ = self._minimise(Fb, z[idx], [self.theta_], bounds)
            except UserError:
                continue
            samples[b] = list(self._to_params(theta).values())
        self.bootstrap_params_ = samples
        q = (1.0 - self.ci_level) / 2.0
        for j, name in enumerate(self.param_names):
            col = samples[:, j][np.isfinite(samples[:, j])]
            if col.size:
                self.ci_[name] = [float(np.quantile(col, q)), float(np.quantile(col, 1.0 - q))]

    def _theta_from_params(self, params: dict) -> np.ndarray:
        """Inverse of _to_params (for predicting from stored params)."""
        return np.array([params[k] for k in self.param_names], dtype=float)

    def predict(self, X, params: dict | None = None) -> np.ndarray:
        """Prediction in y space (undoes the log of log-space laws); `params` overrides the fitted ones."""
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        theta = self.theta_ if params is None else self._theta_from_params(params)
        zhat, _ = self._model(theta, self._prepare(X))
        return self._from_z(zhat)

    def predict_interval(self, X, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band of bootstrap predictions at X (needs n_bootstrap > 0)."""
        if not len(self.bootstrap_params_):
            raise ValueError("predict_interval needs a fit with n_bootstrap > 0")
        level = self.ci_level if level is None else level
        preds = np.array([self.predict(X, dict(zip(self.param_names, row)))
                          for row in self.bootstrap_params_ if np.all(np.isfinite(row))])
        q = (1.0 - level) / 2.0
        return np.quantile(preds, q, axis=0), np.quantile(preds, 1.0 - q, axis=0)

    def to_dict(self) -> dict:
        return {"law": self.name, "variables": list(self.variables), "fit_space": self.fit_space,
                "params": self.params_, "ci": self.ci_, "ci_level": self.ci_level, "r2": self.r2_,
                "rmse": self.rmse_, "n_points": self.n_points_, "huber_delta": self.delta_,
                "n_bootstrap": self.n_bootstrap, "seed": self.seed, "x_range": self.x_range_}

    def summary(self) -> str:
        lines = [f"{self.name}: {self.n_points_} points, R^2={self.r2_:.4f}, RMSE={self.rmse_:.4g} ({self.fit_space})"]
        for k, v in self.params_.items():
            ci = self.ci_.get(k)
            ci_s = f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
            lines.append(f"  {k:>8} = {v:.6g}{ci_s}")
        return "\n".join(lines)


def _span(v: np.ndarray) -> float:
    s = float(np.max(v) - np.min(v))
    return s if s > 0 else 1.0


class SigmoidLaw(LawEstimator):
    """R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B); theta = (R0, A, log C_mid, B); Huber on R residuals."""

    name = "sigmoid"
    variables = ("C",)
    positive = (True,)
    param_names = ("R0", "A", "C_mid", "B")
    default_delta = 0.05

    def __init__(self, huber_delta=None, n_bootstrap=0, ci_level=0.95, seed=0, profile: bool = False,
                 B_max: float = 20.0):
        super().__init__(huber_delta, n_bootstrap, ci_level, seed)
        self.profile = profile
        self.B_max = B_max

    def _prepare(self, X):
        return {"x": np.log(X[:, 0])}

    def _model(self, theta, F, idx=None):
        R0, A, m, B = theta
        x = F["x"]
        s = expit(B * (x - m))
        ds = s * (1.0 - s)
        J = np.empty((x.size, 4))
        J[:, 0] = 1.0 - s
        J[:, 1] = s
        J[:, 2] = -(A - R0) * B * ds
        J[:, 3] = (A - R0) * ds * (x - m)
        return R0 + (A - R0) * s, J

    def _bounds(self, F, z):
        x, sz = F["x"], _span(z)
        sx = _span(x)
        return [(z.min() - 2 * sz, z.max() + 2 * sz), (z.min() - 2 * sz, z.max() + 2 * sz),
                (x.min() - 2 * sx, x.max() + 2 * sx), (1e-3, self.B_max)]

    def _grid(self, F, z):
        x = F["x"]
        lo, hi = np.quantile(z, 0.05), np.quantile(z, 0.95)
        sz = _span(z)
        sx = _span(x)
        R0s = [lo, lo - 0.5 * sz]
        As = [hi, hi + 0.5 * sz]
        ms = np.linspace(x.min(), x.max(), 5)
        Bs = [0.5 * 4 / sx, 2 * 4 / sx, 8 * 4 / sx]
        return np.array(list(itertools.product(R0s, As, ms, Bs)))

    def _to_params(self, theta):
        R0, A, m, B = map(float, theta)
        return {"R0": R0, "A": A, "C_mid": math.exp(m), "B": B}

    def _theta_from_params(self, params):
        return np.array([params["R0"], params["A"], math.log(params["C_mid"]), params["B"]])

    def _after_fit(self, F, z, bounds):
        self.profile_ci_ = {}
        if self.profile:
            self.profile_ci_["A"] = list(profile_interval(self, F, z, bounds, 1, self.ci_level))

    def to_dict(self) -> dict:
        d = super().to_dict()
        # an interval side that never closes within the bounds is null (JSON has no infinity)
        d["profile_ci"] = {k: [v if math.isfinite(v) else None for v in iv]
                           for k, iv in getattr(self, "profile_ci_", {}).items()}
        return d


def profile_interval(est: LawEstimator, F: dict, z: np.ndarray, bounds, j: int, level: float) -> tuple[float, float]:
    """Profile-likelihood interval for theta_j: {t : n log(SSE(t) / SSE_min) <= chi2_1(level)}, SSE(t) minimised
    over the other parameters with theta_j = t (Gaussian errors). Returns (-inf|+inf) on a side that never closes
    within the parameter bounds."""
    n = z.size
    p = len(est.param_names)
    free = [k for k in range(p) if k != j]

    def sse_at(t: float, x0: np.ndarray) -> tuple[float, np.ndarray]:
        def resid(u):
            th = np.empty(p)
            th[free] = u
            th[j] = t
            zhat, J = est._model(th, F)
            return z - zhat

        def jac(u):
            th = np.empty(p)
            th[free] = u
            th[j] = t
            return -est._model(th, F)[1][:, free]

        lb = [bounds[k][0] for k in free]
        ub = [bounds[k][1] for k in free]
        res = optimize.least_squares(resid, np.clip(x0, lb, ub), jac=jac, bounds=(lb, ub), method="trf")
        return float(np.sum(res.fun**2)), res.x

    theta = est.theta_
    sse0, _ = sse_at(theta[j], theta[free])
    crit = stats.chi2.ppf(level, 1)

    def dev(t, x0):
        s, u = sse_at(t, x0)
        return n * math.log(max(s, 1e-300) / max(sse0, 1e-300)) - crit, u

    out = []
    for direction in (-1.0, 1.0):
        limit = bounds[j][0] if direction < 0 else bounds[j][1]
        step = max(abs(theta[j]) * 1e-3, 1e-4 * max(1.0, abs(limit - theta[j])))
        t_prev, x_prev = theta[j], theta[free]
        found = None
        while True:
            t = theta[j] + direction * step
            if (t - limit) * direction >= 0:
                break
            d, u = dev(t, x_prev)
            if d > 0:
                found = (t_prev, t, x_prev)
                break
            t_prev, x_prev = t, u
            step *= 1.6
        if found is None:
            out.append(-math.inf if direction < 0 else math.inf)
            continue
        a, b, x0 = found
        out.append(optimize.brentq(lambda t, x0=x0: dev(t, x0)[0], a, b, xtol=1e-10 * max(1.0, abs(theta[j]))))
    return out[0], out[1]


class PowerLaw(LawEstimator):
    """y = a x^b (+ c when offset=True, c >= 0); Huber on log y residuals; theta = (log a, b[, c])."""

    name = "power"
    variables = ("x",)
    positive = (True,)
    fit_space = "log y"
    y_positive = True
    default_delta = 0.1

    def __init__(self, huber_delta=None, n_bootstrap=0, ci_level=0.95, seed=0, offset: bool = False):
        super().__init__(huber_delta, n_bootstrap, ci_level, seed)
        self.offset = offset

    @property
    def param_names(self):  # type: ignore[override]
        return ("a", "b", "c") if self.offset else ("a", "b")

    def _prepare(self, X):
        return {"lx": np.log(X[:, 0])}

    def _model(self, theta, F, idx=None):
        lx = F["lx"]
        if not self.offset:
            J = np.empty((lx.size, 2))
            J[:, 0] = 1.0
            J[:, 1] = lx
            return theta[0] + theta[1] * lx, J
        la, b, c = theta
        t = np.exp(la + b * lx)  # a x^b
        pred = t + c
        J = np.empty((lx.size, 3))
        J[:, 0] = t / pred
        J[:, 1] = t * lx / pred
        J[:, 2] = 1.0 / pred
        return np.log(pred), J

    def _bounds(self, F, z):
        b = [(-200.0, 200.0), (-20.0, 20.0)]
        if self.offset:
            b.append((0.0, float(np.exp(z).max())))
        return b

    def _grid(self, F, z):
        lx = F["lx"]
        slope, icpt = np.polyfit(lx, z, 1) if np.ptp(lx) > 0 else (0.0, float(z.mean()))
        if not self.offset:
            return np.array([[icpt, slope]])
        ymin = float(np.exp(z).min())
        rows = []
        for frac in (0.0, 0.3, 0.6, 0.9):
            c = frac * ymin
            zz = np.log(np.exp(z) - c)
            s2, i2 = np.polyfit(lx, zz, 1) if np.ptp(lx) > 0 else (0.0, float(zz.mean()))
            rows.append([i2, s2, c])
        return np.array(rows)

    def _to_params(self, theta):
        out = {"a": math.exp(theta[0]), "b": float(theta[1])}
        if self.offset:
            out["c"] = float(theta[2])
        return out

    def _theta_from_params(self, params):
        th = [math.log(params["a"]), params["b"]]
        if self.offset:
            th.append(params["c"])
        return np.array(th)


class LogLinearKN(LawEstimator):
    """log L = -k(N) log X + e0 + e1 log N, k(N) = K_max N / (N + N0); X = columns (X, N); Huber on log L.

    theta = (K_max, log N0, e0, e1). E(N) = e0 + e1 log N is the intercept at X = 1 (a power law in N).
    """

    name = "loglinear-kn"
    variables = ("X", "N")
    positive = (True, True)
    param_names = ("K_max", "N0", "e0", "e1")
    fit_space = "log y"
    y_positive = True
    default_delta = 0.1

    def _prepare(self, X):
        return {"lX": np.log(X[:, 0]), "lN": np.log(X[:, 1])}

    def _model(self, theta, F, idx=None):
        K, lN0, e0, e1 = theta
        lX, lN = F["lX"], F["lN"]
        s = expit(lN - lN0)  # N / (N + N0)
        J = np.empty((lX.size, 4))
        J[:, 0] = -s * lX
        J[:, 1] = K * s * (1.0 - s) * lX
        J[:, 2] = 1.0
        J[:, 3] = lN
        return -K * s * lX + e0 + e1 * lN, J

    def _bounds(self, F, z):
        lN = F["lN"]
        sN = _span(lN)
        return [(0.0, 50.0), (lN.min() - 3 * sN, lN.max() + 3 * sN), (-1e3, 1e3), (-50.0, 50.0)]

    def _grid(self, F, z):
        lX, lN = F["lX"], F["lN"]
        # per-N slopes give a scale for K_max
        slopes = []
        for v in np.unique(lN):
            m = lN == v
            if m.sum() >= 2 and np.ptp(lX[m]) > 0:
                slopes.append(-np.polyfit(lX[m], z[m], 1)[0])
        kmax = max(max(slopes) if slopes else 0.1, 1e-3)
        rows = []
        for K in (kmax, 2 * kmax, 4 * kmax):
            for lN0 in np.linspace(lN.min() - 1, lN.max() + 1, 5):
                s = expit(lN - lN0)
                resid = z + K * s * lX
                A = np.column_stack([np.ones_like(lN), lN])
                e0, e1 = np.linalg.lstsq(A, resid, rcond=None)[0]
                rows.append([K, lN0, e0, e1])
        return np.array(rows)

    def _to_params(self, theta):
        K, lN0, e0, e1 = map(float, theta)
        return {"K_max": K, "N0": math.exp(lN0), "e0": e0, "e1": e1}

    def _theta_from_params(self, params):
        return np.array([params["K_max"], math.log(params["N0"]), params["e0"], params["e1"]])


class ChinchillaLaw(LawEstimator):
    """L = E + A/N^alpha + B/D^beta fitted as log L = LSE(a - alpha log N, b - beta log D, e) (Besiroglu et al.),
    Huber delta 1e-3 on log L summed, L-BFGS-B from the best points of their grid
    (alpha, beta in 0..2 step .5; e in -1..1 step .5; a, b in 0..25 step 5). X = columns (N, D)."""

    name = "chinchilla"
    variables = ("N", "D")
    positive = (True, True)
    param_names = ("E", "A", "B", "alpha", "beta")
    fit_space = "log y"
    y_positive = True
    default_delta = 1e-3
    n_top_starts = 24
    lbfgs_options = {"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12, "maxls": 50}

    def _prepare(self, X):
        return {"lN": np.log(X[:, 0]), "lD": np.log(X[:, 1])}

    def _model(self, theta, F, idx=None):
        a, b, e, alpha, beta = theta
        lN, lD = F["lN"], F["lD"]
        t = np.stack([a - alpha * lN, b - beta * lD, np.full(lN.shape, e)])  # (3, n)
        m = t.max(axis=0)
        w = np.exp(t - m)
        s = w.sum(axis=0)
        w /= s
        J = np.empty((lN.size, 5))
        J[:, 0] = w[0]
        J[:, 1] = w[1]
        J[:, 2] = w[2]
        J[:, 3] = -w[0] * lN
        J[:, 4] = -w[1] * lD
        return m + np.log(s), J

    def _bounds(self, F, z):
        return [(-20.0, 60.0), (-20.0, 60.0), (-10.0, 10.0), (0.0, 5.0), (0.0, 5.0)]

    def _grid(self, F, z):
        g = itertools.product(np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
                              np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))
        return np.array(list(g), dtype=float)

    def _multi_start(self, F, z, bounds):
        grid = np.clip(self._grid(F, z), [b[0] for b in bounds], [b[1] for b in bounds])
        # objective on the whole grid at once: (k, 3, n) LSE
        lN, lD = F["lN"], F["lD"]
        a, b, e, al, be = (grid[:, i : i + 1] for i in range(5))
        t = np.stack([a - al * lN, b - be * lD, np.broadcast_to(e, (grid.shape[0], lN.size))], axis=1)
        m = t.max(axis=1)
        zhat = m + np.log(np.exp(t - m[:, None, :]).sum(axis=1))
        vals = huber(z - zhat, self.delta_).sum(axis=1)
        order = np.argsort(vals)[: self.n_top_starts]
        return self._minimise(F, z, grid[order], bounds)

    def _to_params(self, theta):
        a, b, e, alpha, beta = map(float, theta)
        return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}

    def _theta_from_params(self, params):
        return np.array([math.log(params["A"]), math.log(params["B"]), math.log(params["E"]), params["alpha"],
                         params["beta"]])


class PretrainRLLaw(LawEstimator):
    """acc = lo + (hi - lo) * expit(a log C_pre + b log C_rl + c), a, b >= 0, 0 <= lo, hi <= 1 (accuracy);
    X = columns (C_pre, C_rl); Huber on acc residuals. Internally the logs are centred for conditioning."""

    name = "pretrain-rl"
    variables = ("C_pre", "C_rl")
    positive = (True, True)
    param_names = ("lo", "hi", "a", "b", "c")
    default_delta = 0.05
    _mp = 0.0  # centring of log C_pre / log C_rl (set by fit; any value is consistent for stored params)
    _mr = 0.0

    def _prepare(self, X):
        lp, lr = np.log(X[:, 0]), np.log(X[:, 1])
        return {"lp": lp, "lr": lr}

    def fit(self, X, y, groups=None):
        X2 = self._check_X(X)
        self._mp = float(np.log(X2[:, 0]).mean())
        self._mr = float(np.log(X2[:, 1]).mean())
        return super().fit(X2, y, groups)

    def _model(self, theta, F, idx=None):
        lo, hi, a, b, c = theta  # c is the centred intercept here
        up, ur = F["lp"] - self._mp, F["lr"] - self._mr
        s = expit(a * up + b * ur + c)
        ds = (hi - lo) * s * (1.0 - s)
        J = np.empty((up.size, 5))
        J[:, 0] = 1.0 - s
        J[:, 1] = s
        J[:, 2] = ds * up
        J[:, 3] = ds * ur
        J[:, 4] = ds
        return lo + (hi - lo) * s, J

    def _bounds(self, F, z):
        return [(0.0, 1.0), (0.0, 1.0), (0.0, 50.0), (0.0, 50.0), (-50.0, 50.0)]

    def _grid(self, F, z):
        sp, sr = _span(F["lp"]), _span(F["lr"])
        rows = []
        for lo, hi in ((float(z.min()), float(z.max())), (0.0, 1.0)):
            for a in (1 / sp, 4 / sp, 16 / sp):
                for b in (1 / sr, 4 / sr, 16 / sr):
                    for c in (-2.0, 0.0, 2.0):
                        rows.append([lo, hi, a, b, c])
        return np.array(rows)

    def _to_params(self, theta):
        lo, hi, a, b, c = map(float, theta)
        return {"lo": lo, "hi": hi, "a": a, "b": b, "c": c - a * self._mp - b * self._mr}

    def _theta_from_params(self, params):
        a, b = params["a"], params["b"]
        return np.array([params["lo"], params["hi"], a, b, params["c"] + a * self._mp + b * self._mr])


LAWS: dict[str, type[LawEstimator]] = {
    "sigmoid": SigmoidLaw,
    "power": PowerLaw,
    "loglinear-kn": LogLinearKN,
    "chinchilla": ChinchillaLaw,
    "pretrain-rl": PretrainRLLaw,
}


def get_law(name: str) -> type[LawEstimator]:
    """The estimator class for a law name; unknown names fail listing the valid ones."""
    if name not in LAWS:
        raise UserError(f"unknown law '{name}'; choose one of: {', '.join(LAWS)}")
    return LAWS[name]
