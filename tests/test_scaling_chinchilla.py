"""Known answer: refit Epoch AI's replication data of Chinchilla Approach 3 (see ../shared/data/chinchilla/README.md):
240 rows (5 highest losses dropped), D = C/(6N), Huber delta 1e-3 on log loss summed, L-BFGS from their grid.
Reference optimum: A=477.8, B=2143, E=1.8172, alpha=0.3473, beta=0.3672, objective 1.018274e-3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlscale.cli import main
from rlscale.scaling.estimators import ChinchillaLaw

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla" / "svg_extracted_data.csv"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not present")


def load():
    df = pd.read_csv(DATA)
    df = df[df["loss"] < sorted(df["loss"])[-5]]
    N = df["Model Size"].to_numpy(float)
    D = df["Training FLOP"].to_numpy(float) / (6 * N)
    return np.column_stack([N, D]), df["loss"].to_numpy(float)


def test_chinchilla_known_answer():
    X, y = load()
    assert len(y) == 240
    est = ChinchillaLaw().fit(X, y)
    p = est.params_
    assert p["E"] == pytest.approx(1.8172, rel=0.02)
    assert p["alpha"] == pytest.approx(0.3473, rel=0.02)
    assert p["beta"] == pytest.approx(0.3672, rel=0.02)
    assert p["A"] == pytest.approx(477.8, rel=0.05)
    assert p["B"] == pytest.approx(2143, rel=0.05)
    assert est.loss_ == pytest.approx(1.018274e-3, rel=1e-4)
    # the replication paper's published values (E 1.82, A 482, B 2085, alpha .348, beta .366) agree within 2%
    assert p["E"] == pytest.approx(1.82, rel=0.02) and p["alpha"] == pytest.approx(0.348, rel=0.02)
    assert p["beta"] == pytest.approx(0.366, rel=0.02)


def test_chinchilla_cli(tmp_path, capsys):
    out = tmp_path / "fit"
    rc = main(["fit", str(DATA), "--law", "chinchilla", "--x", "Model Size", "--flops", "Training FLOP",
               "--y", "loss", "--drop-highest", "5", "--bootstrap", "0", "--out", str(out)])
    assert rc == 0
    import json

    fit = json.loads((out / "fit.json").read_text())
    assert fit["n_points"] == 240
    assert fit["params"]["alpha"] == pytest.approx(0.3473, rel=1e-3)
    assert (out / "fit.png").stat().st_size > 1000
