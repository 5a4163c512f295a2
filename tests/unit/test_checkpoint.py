"""Checkpoint commit and choice: a half-written state file never becomes 'the newest checkpoint'."""
import json

from selm_ray.learner import checkpoint


def _ckpt(run_dir, step, state=None):
    out = checkpoint.checkpoint_dir(run_dir, step)
    out.mkdir(parents=True)
    if state is not False:
        checkpoint.write_atomic(out / checkpoint.STATE_FILE, json.dumps(state or {"step": step}))
    return out


def test_latest_skips_interrupted_and_damaged_checkpoints(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    first = _ckpt(tmp_path, 1)
    _ckpt(tmp_path, 2, state=False)  # interrupted before its state file
    damaged = _ckpt(tmp_path, 3)
    (damaged / checkpoint.STATE_FILE).write_text('{"step": 3, "vers')  # a torn write (not ours)
    assert checkpoint.latest(tmp_path) == first
    assert not list(tmp_path.rglob("*.tmp"))  # the atomic write leaves no temporary behind
    newest = _ckpt(tmp_path, 4)
    assert checkpoint.latest(tmp_path) == newest and checkpoint.load_state(newest) == {"step": 4}


def test_prune_keeps_the_newest_complete_ones(tmp_path):
    dirs = [_ckpt(tmp_path, s) for s in (1, 2, 3, 4)]
    assert checkpoint.prune(tmp_path, 0) == [] and all(d.is_dir() for d in dirs)  # 0 keeps all
    assert checkpoint.prune(tmp_path, 2) == dirs[:2]
    assert [d.is_dir() for d in dirs] == [False, False, True, True]
    assert checkpoint.latest(tmp_path) == dirs[-1]


def test_prune_spares_the_checkpoint_holding_a_kept_ones_reference(tmp_path):
    # step 2 ended an iteration (its policy is the reference of what follows); 3 and 4 are mid-iteration
    start = _ckpt(tmp_path, 2, {"step": 2, "ref_path": str(checkpoint.checkpoint_dir(tmp_path, 2))})
    mid = [_ckpt(tmp_path, s, {"step": s, "ref_path": str(start)}) for s in (3, 4)]
    assert checkpoint.prune(tmp_path, 1) == [mid[0]]  # step 3 goes, step 2 stays: step 4 needs it
    assert start.is_dir() and mid[1].is_dir()
