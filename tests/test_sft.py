"""SFT: loss on solution tokens only (closed-form check), multi-solution data, learning, resume, CLI."""

import json

import pytest
import torch

from rlscale.cli import main
from rlscale.errors import UserError
from rlscale.sft import SFTConfig, load_examples, train_sft
from rlscale.store import RunStore

torch.set_num_threads(1)


def tiny_policy(seed=0):
    from test_grpo import tiny_policy as tp
    return tp(seed)


def write_data(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


ROWS = [{"problem_id": "p1", "prompt": "a=1;a?", "solution": "a=1;####1"},
        {"problem_id": "p1", "prompt": "a=1;a?", "solution": "a=1;answer: 1"},  # a second solution, same problem
        {"problem_id": "p2", "question": "a=2,b=a+1;b?", "solution": "b=a+1=2+1=3;####3"}]


def test_loss_is_solution_token_nll(tmp_path):
    """Step-1 loss equals the mean NLL of solution+EOS tokens computed directly (prompt tokens excluded)."""
    pol = tiny_policy()
    data = write_data(tmp_path / "d.jsonl", ROWS)
    tok = pol.tokenizer
    nll, count = 0.0, 0
    with torch.no_grad():
        for _, prompt, sol in load_examples(data, "plain"):
            p, s = tok.encode(prompt), tok.encode(sol) + [tok.eos_id]
            ids = torch.tensor([p + s])
            lp, _ = pol.token_logprobs(ids, torch.ones_like(ids))
            nll -= lp[0, len(p) - 1:].sum().item()
            count += len(s)
    cfg = SFTConfig(model="m", data=data, steps=1, batch_size=3, micro_batch_size=2)
    s = train_sft(cfg, tmp_path / "run", progress=False, policy=pol)
    assert s["loss_first"] == pytest.approx(nll / count, rel=1e-5)
    assert s["tokens"] == count


def test_sft_learns_and_resumes(tmp_path):
    rows = [{"problem_id": f"p{i}", "prompt": f"a={i};a?", "solution": f"a={i};####{i}"} for i in range(10)]
    data = write_data(tmp_path / "d.jsonl", rows)
    cfg = SFTConfig(model="m", data=data, epochs=30, batch_size=10, lr=1e-2, checkpoint_every=10)
    s = train_sft(cfg, tmp_path / "run", progress=False, policy=tiny_policy())
    assert s["steps"] == 30 and s["loss_last"] < 0.5 * s["loss_first"]
    from rlscale.numerics import numerics_record

    assert s["numerics"] == numerics_record()  # what decides the run's bits, as GRPO runs record it
    from rlscale.models import load_policy
    assert load_policy(s["model_dir"]).num_params() == tiny_policy().num_params()
    # finished -> returned, not re-run
    assert train_sft(cfg, tmp_path / "run", progress=False, policy=tiny_policy()) == s
    # resume after losing the rows past the last checkpoint: same losses as uninterrupted
    st = RunStore.open(tmp_path / "run")
    import shutil
    shutil.copytree(tmp_path / "run", tmp_path / "run2")
    (tmp_path / "run2" / "summary.json").unlink()
    s2 = RunStore.open(tmp_path / "run2")
    shutil.rmtree(s2.latest_checkpoint()[1])  # back to step 20
    s2.log_step(31, {"train/loss": 9.9})  # a row from a lost future is rolled back too
    again = train_sft(cfg, tmp_path / "run2", resume=True, progress=False, policy=tiny_policy())
    assert [r["train/loss"] for r in RunStore.open(tmp_path / "run2").steps()] == \
        [r["train/loss"] for r in st.steps()]
    assert again["steps"] == 30


def test_bad_data_and_cli(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    with pytest.raises(UserError, match="solution"):
        load_examples(str(bad), "plain")
    tiny_policy().save(str(tmp_path / "lab"))
    rc = main(["train", "sft", "--model", str(tmp_path / "lab"), "--data", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing field 'solution'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    data = write_data(tmp_path / "d.jsonl", ROWS)
    rc = main(["train", "sft", "--model", str(tmp_path / "lab"), "--data", data, "--steps", "2", "--batch-size", "2",
               "--out", str(tmp_path / "o"), "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["steps"] == 2 and out["examples"] == 3
