"""bench.run's engine section: methods measured by separate runs stand side by side, each run named while
a row of it stands."""

import argparse
import itertools

import bench.engine_bench
import bench.run


def test_separate_runs_stand_side_by_side_and_a_run_all_of_whose_rows_were_redone_is_dropped(monkeypatch):
    clock = itertools.count(1)
    monkeypatch.setattr(bench.run, "stamp", lambda results: {"at": f"t{next(clock)}", "command": "c"})
    monkeypatch.setattr(
        bench.engine_bench,
        "run",
        lambda n, what, methods: {"n_users": n, **{m: {"seconds": 1.0} for m in methods}},
    )

    def engine(results: dict, *methods: str) -> dict:
        args = argparse.Namespace(
            engine_users=None, quick=False, engine_what=["training_set"], engine_methods=methods
        )
        return {**results, "engine": bench.run.run_engine(args, results)}

    r = engine({}, "embedded", "spark2")  # t1
    r = engine(r, "spark1")  # t2: beside t1's rows
    ts = r["engine"]["training_set"]
    assert {m: ts[m]["measured_at"] for m in ("embedded", "spark1", "spark2")} == {
        "embedded": "t1",
        "spark1": "t2",
        "spark2": "t1",
    }
    assert [m["at"] for m in ts["measured"]] == ["t1", "t2"]

    r = engine(r, "embedded", "spark2")  # t3 redoes every row of t1: t1 is no longer named
    assert [m["at"] for m in r["engine"]["training_set"]["measured"]] == ["t2", "t3"]
    assert bench.run.headline(r)["training_set_10m_seconds"].keys() == {"embedded", "spark1", "spark2"}
