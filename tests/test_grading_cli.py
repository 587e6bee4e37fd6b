"""`rlscale grade`: id and gold inputs, output lines in order, --json summary, and one-line errors (exit 2, nothing
written) for malformed input."""

import json

import pytest

from rlscale.cli import main
from rlscale.grading import GRADING_VERSION
from rlscale.tasks.base import TASKS, Problem, Task, register


@pytest.fixture
def fake_task():
    def load(split, data_path=None, limit=None):
        return [Problem(id=f"fake/{i}", question=f"q{i}", answer=str(i * 10)) for i in range(3)]

    register(Task(name="fake_grade", description="test task", splits=("test",), default_mode="flexible",
                  template="plain", load=load))
    yield "fake_grade"
    TASKS.pop("fake_grade", None)


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_grade_by_id_writes_one_line_per_input_in_order(tmp_path, capsys, fake_task):
    preds = _write(tmp_path / "p.jsonl", [
        {"id": "fake/2", "completion": "so 20", "extra": 1},
        {"id": "fake/0", "completion": "answer: 1"},
        {"gold": "7", "completion": "#### 7"},
        {"id": "fake/1", "completion": "nothing"},
    ])
    out = tmp_path / "r.jsonl"
    assert main(["grade", "--task", fake_task, "--predictions", str(preds), "--output", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 4 and summary["correct"] == 2 and summary["accuracy"] == 0.5
    assert summary["unscorable"] == 0 and summary["timeouts"] == 0
    assert summary["by_reason"] == {"correct": 2, "no_answer": 1, "wrong": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reason"] for r in rows] == ["correct", "wrong", "correct", "no_answer"]
    assert rows[0]["extra"] == 1 and rows[0]["extracted"] == "20" and rows[0]["reward"] == 1.0
    assert all(r["grading_version"] == GRADING_VERSION and r["mode"] == "flexible" for r in rows)


def test_grade_gold_lines_math_mode_and_unscorable(tmp_path, capsys):
    preds = _write(tmp_path / "p.jsonl", [
        {"gold": "\\frac{1}{2}", "completion": "\\boxed{0.5}"},
        {"gold": "", "completion": "\\boxed{1}"},
        {"gold": 3, "completion": "\\boxed{3}"},
    ])
    assert main(["grade", "--predictions", str(preds), "--mode", "math", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {**summary, "n": 3, "correct": 2, "accuracy": 1.0, "unscorable": 1}
    rows = [json.loads(line) for line in (tmp_path / "p.graded.jsonl").read_text().splitlines()]
    assert rows[1]["reward"] is None and rows[1]["reason"] == "unparseable_gold"


def test_grade_real_gsm8k_ids(tmp_path, capsys):
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
    if not data.exists():
        pytest.skip("no GSM8K data")
    preds = _write(tmp_path / "p.jsonl", [{"id": "gsm8k/test/0", "completion": "#### 18"},
                                          {"id": "gsm8k/test/1", "completion": "answer: 3"}])
    code = main(["grade", "--task", "gsm8k", "--data-path", str(data), "--predictions", str(preds),
                 "--mode", "strict", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["correct"] == 1 and summary["by_reason"] == {"correct": 1, "no_answer": 1}


@pytest.mark.parametrize("lines,extra,message", [
    (['{"gold": "1", "completion": "1"}', '{"gold": 1, "completion"'], [], "p.jsonl:2: malformed JSON"),
    (['{"gold": "1"}'], [], "p.jsonl:1: missing field 'completion'"),
    (['{"completion": "1"}'], [], "p.jsonl:1: missing field 'gold'"),
    (['{"id": "fake/0", "completion": "1"}'], [], "p.jsonl:1: field 'id' needs --task"),
    (['{"id": "fake/9", "completion": "1"}'], ["--task", "TASK"], "p.jsonl:1: field 'id': unknown id 'fake/9'"),
    (['{"gold": "1", "completion": 5}'], [], "p.jsonl:1: field 'completion' must be a string"),
    (['[1, 2]'], [], "p.jsonl:1: expected a JSON object"),
    (['{"gold": "1", "completion": "1"}'], ["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
])
def test_grade_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, fake_task, lines, extra, message):
    preds = _write(tmp_path / "p.jsonl", lines)
    extra = [fake_task if a == "TASK" else a for a in extra]
    mode = [] if "--task" in extra and "nosuchtask" not in extra else ["--mode", "flexible"]
    code = main(["grade", "--predictions", str(preds), *mode, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_grade_unknown_mode_and_missing_file(tmp_path, capsys):
    preds = _write(tmp_path / "p.jsonl", ['{"gold": "1", "completion": "1"}'])
    with pytest.raises(SystemExit) as e:
        main(["grade", "--predictions", str(preds), "--mode", "fuzzy"])
    assert e.value.code == 2 and "invalid choice: 'fuzzy'" in capsys.readouterr().err
    assert main(["grade", "--predictions", str(tmp_path / "none.jsonl"), "--mode", "strict"]) == 2
    assert "none.jsonl: file not found" in capsys.readouterr().err
    assert main(["grade", "--predictions", str(preds)]) == 2
    assert "--mode is required" in capsys.readouterr().err


def test_grade_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["grade", "--help"])
    out = capsys.readouterr().out
    assert "--predictions" in out and "default: 3.0" in out
