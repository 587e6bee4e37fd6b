"""Task registry and real-data loaders (GSM8K, MATH-500, MATH, MMLU): formats, ids, data lookup, bad input."""

import json
from pathlib import Path

import pandas as pd
import pytest

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.tasks import TASKS, get_task
from rlscale.tasks.real import gsm8k_gold, last_boxed, strip_calculator

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "gsm8k" / "test.jsonl").exists(), reason="shared data not present")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_registry_has_all_tasks():
    assert {"gsm8k", "math500", "math", "mmlu", "arith"} <= set(TASKS)
    assert get_task("gsm8k").default_mode == "flexible"
    assert get_task("math500").default_mode == "math" and get_task("math").default_mode == "math"
    assert get_task("mmlu").default_mode == "letter"
    assert get_task("arith").template == "plain"


def test_unknown_task():
    with pytest.raises(UserError, match="unknown task 'nope'.*gsm8k"):
        get_task("nope")


def test_gsm8k_helpers():
    assert gsm8k_gold("a\nb\n#### 1,450,000") == "1450000"
    assert gsm8k_gold("x\n#### -10\n") == "-10"
    assert gsm8k_gold("no final line") is None
    assert strip_calculator("2*3=<<2*3=6>>6 and <<1+1=2>>2") == "2*3=6 and 2"


def test_last_boxed_is_brace_matched():
    assert last_boxed(r"so \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{unclosed") is None
    assert last_boxed("none") is None


def test_gsm8k_from_file(tmp_path):
    f = write_jsonl(tmp_path / "g.jsonl", [
        {"question": "Q1?", "answer": "3*4=<<3*4=12>>12\n#### 12"},
        {"question": "Q2?", "answer": "big\n#### 1,000"},
    ])
    ps = get_task("gsm8k").load("test", data_path=str(f))
    assert [p.id for p in ps] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert ps[0].answer == "12" and ps[0].solution == "3*4=12\n#### 12"
    assert ps[1].answer == "1000"
    assert len(get_task("gsm8k").load("test", data_path=str(f), limit=1)) == 1


def test_gsm8k_parquet(tmp_path):
    f = tmp_path / "g.parquet"
    pd.DataFrame([{"question": "Q?", "answer": "#### 7"}]).to_parquet(f)
    assert get_task("gsm8k").load("train", data_path=str(f))[0].answer == "7"


def test_gsm8k_bad_rows(tmp_path):
    f = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "answer": "no final"}])
    with pytest.raises(UserError, match=r"row 1: field 'answer' has no final"):
        get_task("gsm8k").load("test", data_path=str(f))
    f = write_jsonl(tmp_path / "h.jsonl", [{"question": "Q?"}])
    with pytest.raises(UserError, match="missing field 'answer'"):
        get_task("gsm8k").load("test", data_path=str(f))


def test_data_dir_env(tmp_path, monkeypatch):
    (tmp_path / "math500").mkdir()
    write_jsonl(tmp_path / "math500" / "test.jsonl", [
        {"problem": "P", "solution": r"so \boxed{5}", "answer": "5", "subject": "Algebra", "level": 2,
         "unique_id": "test/algebra/1.json"}])
    monkeypatch.setenv("RLSCALE_DATA_DIR", str(tmp_path))
    (p,) = get_task("math500").load("test")
    assert p.id == "test/algebra/1.json" and p.answer == "5" and p.meta == {"subject": "Algebra", "level": 2}


def test_missing_data_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RLSCALE_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError) as e:
        get_task("gsm8k").load("test")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "gsm8k" / "test.jsonl") in msg and "--data-path" in msg
    with pytest.raises(UserError, match="data file not found"):
        get_task("gsm8k").load("test", data_path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="valid splits"):
        get_task("math500").load("train")


def test_math_without_answer_field_uses_boxed(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [
        {"problem": "P", "solution": r"x \boxed{\frac{1}{2}}", "type": "Algebra", "level": "Level 3"}])
    (p,) = get_task("math").load("train", data_path=str(f))
    assert p.answer == r"\frac{1}{2}" and p.meta == {"subject": "Algebra", "level": 3} and p.id == "math/train/0"


def test_mmlu(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [
        {"question": "2+2?", "choices": ["1", "2", "3", "4"], "answer": 3, "subject": "elementary_mathematics"},
        {"question": "Sky?", "choices": ["red", "blue", "green", "pink"], "answer": "B"},
    ])
    a, b = get_task("mmlu").load("test", data_path=str(f))
    assert a.id == "mmlu/elementary_mathematics/test/0" and a.answer == "D" and a.meta["choices"][3] == "4"
    assert b.id == "mmlu/all/test/1" and b.answer == "B"
    bad = write_jsonl(tmp_path / "b.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(UserError, match="not an index"):
        get_task("mmlu").load("test", data_path=str(bad))


@needs_data
def test_real_gsm8k_and_math500():
    ps = get_task("gsm8k").load("test", data_path=str(DATA / "gsm8k" / "test.jsonl"))
    assert len(ps) == 1319 and ps[0].answer == "18" and "<<" not in ps[0].solution
    assert all(p.answer.lstrip("-").isdigit() for p in ps)
    assert len({p.id for p in ps}) == 1319
    ms = get_task("math500").load("test", data_path=str(DATA / "math500" / "test.jsonl"))
    assert len(ms) == 500 and ms[0].id == "test/precalculus/807.json"
    assert len({p.id for p in ms}) == 500 and all(p.meta["level"] in range(1, 6) for p in ms)


def test_cli_tasks_lists_everything(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("gsm8k", "math500", "math", "mmlu", "arith"):
        assert name in out
    assert "RLSCALE_DATA_DIR" in out


def test_cli_show(tmp_path, capsys):
    f = write_jsonl(tmp_path / "g.jsonl", [{"question": f"Q{i}?", "answer": f"s{i}\n#### {i}"} for i in range(5)])
    assert main(["show", "gsm8k", "--data-path", str(f), "--limit", "2", "--shots", "1"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k/test/0" in out and "gold: 1" in out and "gsm8k/test/2" not in out
    assert out.count("Question:") == 4  # two problems, each with one exemplar


def test_cli_show_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RLSCALE_DATA_DIR", raising=False)
    assert main(["show", "nope"]) == 2
    assert main(["show", "gsm8k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("rlscale show: error:") for line in err)


@needs_data
def test_data_dir_layout_of_shared_data(monkeypatch):
    monkeypatch.setenv("RLSCALE_DATA_DIR", str(DATA))
    train = get_task("gsm8k").load("train")
    assert len(train) == 7473 and train[0].id == "gsm8k/train/0"
    assert sum(p.answer.startswith("-") for p in train) == 3
    assert len(get_task("math500").load("test", limit=7)) == 7
