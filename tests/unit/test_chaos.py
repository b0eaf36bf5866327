"""detinfer.local.chaos without a cluster: what counts as a duplicate Job, the table, the
command line. `make chaos` and tests/e2e/test_chaos.py run it against a real one."""

from __future__ import annotations

import pytest

from detinfer.local import chaos


def test_a_job_created_while_another_ones_pod_ran_is_a_duplicate():
    runs = [("first", 100.0, 160.0), ("second", 150.0, 210.0)]
    assert chaos.overlapping(runs, since=90.0) == ["second"]


def test_a_job_created_once_the_last_pod_ended_is_none():
    """Its Job's Complete condition may come later (the kube-controller-manager writes it, and
    was restarting during a stall): the pod's end is what the operator reads."""
    runs = [("first", 100.0, 160.0), ("second", 160.0, 220.0), ("third", 221.0, 230.0)]
    assert chaos.overlapping(runs, since=90.0) == []


def test_only_jobs_of_the_row_count():
    runs = [("before", 10.0, 80.0), ("overlapping-before", 50.0, 90.0), ("row", 100.0, 120.0)]
    assert chaos.overlapping(runs, since=95.0) == []


def test_a_row_is_ok_only_when_every_check_holds():
    good = chaos.Row("engine-pod-deleted", converged=True, fingerprint="unchanged")
    assert good.ok
    for change in (
        {"converged": False},
        {"fingerprint": "sha256:ab (was sha256:cd)"},
        {"false_verdicts": 1},
        {"duplicate_jobs": 1},
    ):
        row = chaos.Row("engine-pod-deleted", converged=True, fingerprint="unchanged")
        for key, value in change.items():
            setattr(row, key, value)
        assert not row.ok, change
    # Could not test is no verdict: it does not fail a row.
    assert chaos.Row("x", converged=True, fingerprint="unchanged", could_not_test=2).ok


def test_the_table_has_a_row_per_fault_and_says_no_where_it_did_not_converge():
    rows = [
        chaos.Row("etcd-frozen", True, 91.2, "3/3", "unchanged", restarted=["kube-scheduler"]),
        chaos.Row("engine-hung", False, 600.0, "1/2", "unchanged", note="not converged: x"),
    ]
    lines = chaos.table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| fault | converged |")
    assert lines[2].startswith("| etcd-frozen | yes | 91 | 3/3 | unchanged |")
    assert "kube-scheduler" in lines[2]
    assert lines[3].startswith("| engine-hung | NO | 600 | 1/2 |")


def test_an_unknown_fault_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exc:
        chaos.main(["--faults", "engine-pod-deleted,disk-full"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--faults: unknown disk-full" in err and "apiserver-frozen" in err


def test_the_fast_subset_is_made_of_known_faults():
    assert set(chaos.FAST) <= set(chaos.FAULTS)
    assert "apiserver-frozen" not in chaos.FAST and "etcd-frozen" not in chaos.FAST
