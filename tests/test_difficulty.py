"""Difficulty buckets, train/val splits and mixtures; `rlscale curate` on a saved profile; bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.evals.difficulty import (
    DEFAULT_BUCKETS,
    Bucket,
    bucket_sets,
    histogram,
    largest_remainder,
    mixture,
    parse_bucket,
    parse_mix,
    text_histogram,
)
from rlscale.io import read_jsonl, write_table


def make_profile(num=400, n=16, seed=0):
    rng = np.random.default_rng(seed)
    correct = rng.integers(0, n + 1, size=num)
    correct[:60] = 0  # plenty of extremely hard problems
    return pd.DataFrame({"problem_id": [f"p{i}" for i in range(num)], "n": n, "correct": correct,
                         "avg": correct / n, "question": [f"q{i}?" for i in range(num)],
                         "answer": [str(i) for i in range(num)], "solution": "", "meta": "{}"})


def test_bucket_bounds_exact():
    df = make_profile()
    for name, b in DEFAULT_BUCKETS.items():
        sel = df[b.mask(df)]
        assert len(sel) > 0, name
        if name == "easy":
            assert sel["avg"].between(0.3, 0.6).all()
            assert len(sel) == ((df["avg"] >= 0.3) & (df["avg"] <= 0.6)).sum()
        if name == "hard":
            assert (sel["avg"] <= 0.0625).all() and set(sel["correct"]) <= {0, 1}
        if name == "very_easy":
            assert ((sel["avg"] > 0.6) & (sel["avg"] <= 0.9)).all()
        if name == "extremely_hard":
            assert (sel["correct"] == 0).all() and len(sel) == (df["correct"] == 0).sum()


def test_parse_bucket():
    assert parse_bucket("easy", "0.3,0.6") == Bucket("easy", 0.3, 0.6)
    assert parse_bucket("very_easy", "(0.6,0.9]") == Bucket("very_easy", 0.6, 0.9, lo_open=True)
    assert parse_bucket("x", "[0,0.5)") == Bucket("x", 0.0, 0.5, hi_open=True)
    for bad in ("0.6", "0.7,0.2", "a,b", "0,2"):
        with pytest.raises(UserError):
            parse_bucket("easy", bad)


def test_sets_split_disjoint_and_seeded():
    df = make_profile()
    sets = bucket_sets(df, DEFAULT_BUCKETS, val_fraction=0.2, seed=3)
    for name, (train, val) in sets.items():
        assert not set(train) & set(val)
        members = set(df["problem_id"][DEFAULT_BUCKETS[name].mask(df)])
        assert set(train) | set(val) == members
        assert len(val) == round(0.2 * len(members))
    assert sets == bucket_sets(df, DEFAULT_BUCKETS, val_fraction=0.2, seed=3)
    assert sets != bucket_sets(df, DEFAULT_BUCKETS, val_fraction=0.2, seed=4)


def test_largest_remainder():
    assert largest_remainder([0.5, 0.25, 0.25], 10) == [5, 3, 2]
    assert sum(largest_remainder([1, 1, 1], 100)) == 100
    for total in range(0, 50):
        counts = largest_remainder([0.5, 0.3, 0.2], total)
        assert sum(counts) == total
        assert all(abs(c - p * total) < 1 for c, p in zip(counts, [0.5, 0.3, 0.2]))


@pytest.mark.parametrize("props", [{"hard": 0.5, "easy": 0.5}, {"hard": 0.5, "easy": 0.25, "very_easy": 0.25}])
def test_mixture_proportions(props):
    df = make_profile(num=600)
    train, val = mixture(df, props, total=101, buckets=DEFAULT_BUCKETS, val_fraction=0.1, seed=0)
    assert len(train) + len(val) == 101 and len(val) == 10
    assert len(set(train)) == len(train) and not set(train) & set(val)
    avg = df.set_index("problem_id")["avg"]
    for part in (train, val):
        for name, p in props.items():
            count = sum(DEFAULT_BUCKETS[name].mask(pd.DataFrame({"avg": [avg[i]], "correct": [0]}))[0] for i in part)
            assert abs(count - p * len(part)) < 1, (name, count, len(part))


def test_bad_input():
    df = make_profile()
    with pytest.raises(UserError, match="empty"):
        bucket_sets(df.iloc[:0], DEFAULT_BUCKETS)
    with pytest.raises(UserError, match="selects no problem"):
        bucket_sets(df, {"easy": Bucket("easy", 0.99, 0.995)})
    with pytest.raises(UserError, match="needs"):
        mixture(df, {"hard": 1.0}, total=10_000, buckets=DEFAULT_BUCKETS)
    with pytest.raises(UserError, match="unknown bucket"):
        mixture(df, {"medium": 1.0}, total=10, buckets=DEFAULT_BUCKETS)
    with pytest.raises(UserError, match="BUCKET=PROPORTION"):
        parse_mix("hard:0.5")
    with pytest.raises(UserError, match="missing column"):
        bucket_sets(df.drop(columns=["correct"]), DEFAULT_BUCKETS)


def test_histogram():
    counts, edges = histogram(np.array([0, 0, 0.5, 1.0]), 4)
    assert list(counts) == [2, 0, 1, 0, 1]
    txt = text_histogram(np.array([0, 0, 0.5, 1.0]), 4)
    assert len(txt.splitlines()) == 5 and txt.splitlines()[0].endswith("2")
    counts, _ = histogram(np.linspace(0, 1, 129), 128)
    assert counts.sum() == 129 and len(counts) == 20


def test_cli_curate(tmp_path, capsys):
    df = make_profile()
    prof = tmp_path / "profile.parquet"
    write_table(df, prof)
    out = tmp_path / "sets"
    assert main(["curate", "--profile", str(prof), "--out", str(out), "--mix", "hard=0.5,easy=0.5",
                 "--total", "40", "--val-fraction", "0.25", "--seed", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"easy", "hard", "very_easy", "extremely_hard", "mix_hard50_easy50"} <= set(manifest["sets"])
    for name in manifest["sets"]:
        train = read_jsonl(out / name / "train.jsonl")
        val = read_jsonl(out / name / "val.jsonl")
        assert not {r["id"] for r in train} & {r["id"] for r in val}
        if name == "easy":  # bounds hold on the saved rows
            assert all(0.3 <= r["avg"] <= 0.6 for r in train + val)
        assert all({"id", "question", "answer", "meta"} <= set(r) for r in train)
    mix = read_jsonl(out / "mix_hard50_easy50" / "train.jsonl")
    assert len(mix) == 30 and sum(r["avg"] <= 0.0625 for r in mix) == 15
    # the curated file loads as problems of a task
    from rlscale.tasks import get_task

    ps = get_task("gsm8k").load("train", data_path=str(out / "easy" / "train.jsonl"))
    assert ps and ps[0].id.startswith("p")


def test_cli_curate_errors(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("problem_id,n,correct,avg,question\n")
    assert main(["curate", "--profile", str(empty), "--out", str(tmp_path / "o")]) == 2
    prof = tmp_path / "p.parquet"
    write_table(make_profile(), prof)
    assert main(["curate", "--profile", str(prof), "--out", str(tmp_path / "o"), "--easy", "0.99,0.995"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "empty" in err[0] and "selects no problem" in err[1]
    assert not (tmp_path / "o").exists()
