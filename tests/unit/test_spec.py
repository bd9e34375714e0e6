"""A spec that cannot be used is refused with the file, the line and the key."""

from __future__ import annotations

import pytest
import yaml

from core.spec import SpecError, load_specs, parse_spec
from tests.tabular_world import write_spec

GOOD = """\
name: churn
entity:
  name: subscriber
  join_key: subscriber_id
sources:
  - name: usage
    path: data/raw/churn/usage.csv
    timestamp: week
    columns:
      minutes: {type: float, min: 0}
      plan: {type: string, values: [basic, plus]}
label:
  path: data/raw/churn/labels.csv
  column: churned
  task: binary
  prediction_time: as_of
"""


def test_a_good_spec_derives_its_names_and_features():
    spec = parse_spec(GOOD)
    assert spec.feature_service == "churn_v1" and spec.view_name(spec.sources[0]) == "churn__usage"
    assert [name for name, _ in spec.features] == ["minutes", "plan"]
    assert [col.feast_dtype for _, col in spec.features] == ["Float64", "String"]
    assert spec.label.binary_values == ("1", "0") and spec.split.kind == "random"


def _error(text: str) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(text, origin="specs/churn.yaml")
    return str(e.value)


def test_an_unknown_key_is_named_with_its_line():
    msg = _error(
        GOOD.replace("      minutes: {type: float, min: 0}", "      minutes: {type: float, minn: 0}")
    )
    assert msg == "specs/churn.yaml:10: sources[0].columns.minutes.minn: unknown key (a typo?)"


def test_a_wrong_type_is_named_with_its_line():
    msg = _error(GOOD.replace("min: 0}", "min: zero}"))
    assert msg.startswith("specs/churn.yaml:10: sources[0].columns.minutes.min: ")
    assert "number" in msg
    msg = _error(GOOD.replace("task: binary", "task: ranking"))
    assert (
        msg.startswith("specs/churn.yaml:15: label.task: ")
        and "'binary', 'multiclass' or 'regression'" in msg
    )


def test_a_missing_section_and_inconsistent_declarations_are_explained():
    assert "specs/churn.yaml:1: label: Field required" in _error(GOOD.split("label:")[0])
    no_time = GOOD.replace("    timestamp: week\n", "")
    assert "give exactly one of `timestamp` (a column) or `as_of`" in _error(no_time)
    multi = GOOD.replace("task: binary", "task: multiclass\n  classes: [a, b]")
    assert "needs `classes` with at least 3 values" in _error(multi)
    group = GOOD + "split: {kind: group}\n"
    assert "specs/churn.yaml:17: split: `group_column` is needed by kind group" in _error(group)
    managed = GOOD + "model: {params: {loss_function: RMSE}}\n"
    assert "only a regression may choose its loss" in _error(managed)
    twice = GOOD.replace(
        "      plan: {type: string, values: [basic, plus]}",
        "      plan: {type: string}\n      subscriber_id: {type: int}",
    )
    assert "the join key and the timestamp are implicit" in _error(twice)
    assert "not valid YAML" in _error("name: [unclosed")


def test_specs_naming_one_entity_must_declare_it_alike(tmp_path):
    a = yaml.safe_load(GOOD)
    b = yaml.safe_load(GOOD.replace("name: churn", "name: upsell"))
    b["entity"]["key_type"] = "str"
    write_spec(tmp_path, a)
    write_spec(tmp_path, b)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # derived, not a spec
    with pytest.raises(
        SpecError, match="entity 'subscriber' is declared differently by specs churn and upsell"
    ):
        load_specs(tmp_path)
    b["entity"]["key_type"] = "int"
    write_spec(tmp_path, b)
    assert [s.name for s in load_specs(tmp_path)] == ["churn", "upsell"]


def test_the_committed_reference_is_what_the_spec_models_say():
    from pipelines.tabular.spec_docs import OUT, render

    assert OUT.read_text() == render(), "run `python -m pipelines.tabular.spec_docs`"


def test_every_committed_spec_loads():
    from core.settings import ROOT

    specs = load_specs(ROOT / "specs")
    assert {"payment_option", "churn"} <= {s.name for s in specs}


@pytest.mark.parametrize(
    ("change", "line", "says"),
    [
        # a user column taking a name the stages use would replace theirs (a point-in-time leak for this one)
        (
            lambda t: t + "  columns: {prediction_time: {type: string}}\n",
            17,
            "label.columns.prediction_time: 'prediction_time' is a name the platform uses",
        ),
        (
            lambda t: t.replace("      plan:", "      split: {type: int}\n      plan:"),
            11,
            "sources[0].columns.split: 'split' is a name",
        ),
        (
            lambda t: t.replace("      plan:", "      churned: {type: int}\n      plan:"),
            11,
            "has the name of a label-table column",
        ),
        (
            lambda t: t + "split: {kind: group, group_column: region}\n",
            17,
            "split.group_column: 'region' must be the join key or declared under label.columns",
        ),
        (
            lambda t: t.replace("task: binary", "task: binary\n  positive: a\n  negative: a"),
            13,
            "`positive` and `negative` are both 'a'",
        ),
        (
            lambda t: t.replace("{type: float, min: 0}", "{type: float, reason: '{minutes} min'}"),
            10,
            "may only use {value}",
        ),
        (
            lambda t: t.replace("{type: float, min: 0}", "{type: int, values: [1, young]}"),
            10,
            "values ['young'] are not whole numbers",
        ),
        (
            lambda t: t + "outputs:\n  scoring: {path: a.csv, columns: [subscriber_id, actual]}\n",
            18,
            "outputs.scoring.columns: ['actual'] are not produced",
        ),
        (
            lambda t: t + "outputs:\n  holdout: {path: a.csv}\n  scoring: {path: a.csv}\n",
            19,
            "need different paths",
        ),
        (
            lambda t: t.replace("task: binary", "task: regression") + "model: {calibration: platt}\n",
            17,
            "calibration is for binary models",
        ),
        (
            lambda t: (
                t.replace("task: binary", "task: regression")
                + "model: {params: {loss_function: LogLinQuantile}}\n"
            ),
            17,
            "'LogLinQuantile' is not served",
        ),
        (
            lambda t: t.replace("task: binary", "task: regression") + "kpi: {flagged: a, confirmed: b}\n",
            17,
            "kpi: a KPI counts flagged and confirmed rows of a binary model",
        ),
        (
            lambda t: t + "kpi: {flagged: offers, confirmed: accepted, weight: plan}\n",
            17,
            "kpi.weight: 'plan' is not a numeric column of the sources; known: ['minutes']",
        ),
    ],
)
def test_cross_field_rules_name_their_key_and_line(change, line, says):
    msg = _error(change(GOOD))
    assert msg.startswith(f"specs/churn.yaml:{line}: "), msg
    assert says in msg, msg


def test_row_checks_are_declared_over_numeric_columns_and_may_not_run_code():
    with_checks = GOOD.replace(
        "      plan: {type: string, values: [basic, plus]}\n",
        "      plan: {type: string, values: [basic, plus]}\n      calls: {type: int, min: 0}\n"
        "    checks:\n      - {rule: 'minutes <= 60 * calls', code: too_long}\n",
    )
    (check,) = parse_spec(with_checks).sources[0].checks
    assert check.columns == ["calls", "minutes"] and check.code == "too_long"
    for rule, says in [
        ("__import__('os').system('x') == 0", "uses ['Attribute', 'Call',"),
        ("minutes.real > 0", "uses ['Attribute']"),
        ("minutes == 'x'", "uses [\"text ['x']\"]"),
        ("minutes <= seconds", "names ['seconds'], not declared columns"),
        ("plan == 1", "['plan'] are not numeric columns"),
        ("1 < 2", "names no column"),
        ("minutes <=", "is not an expression"),
    ]:
        msg = _error(with_checks.replace("minutes <= 60 * calls", rule.replace("'", "''")))
        assert msg.startswith("specs/churn.yaml:14: sources[0].checks[0].rule: "), msg
        assert says in msg, (rule, msg)


def test_history_features_are_derived_and_their_names_checked():
    nullable = GOOD.replace("{type: float, min: 0}", "{type: float, min: 0, nullable: true}")
    spec = parse_spec(
        nullable.replace("    columns:\n", "    history: {sum: [minutes], rows: weeks}\n    columns:\n")
    )
    assert [n for n, _ in spec.features] == ["minutes", "plan", "minutes_total", "minutes_rows", "weeks"]
    assert [c.type for _, c in spec.features][2:] == ["float", "int", "int"]
    shares = nullable.replace(
        "    columns:\n", "    history: {sum: [minutes], rows: weeks, share_of: minutes}\n    columns:\n"
    )
    assert [n for n, _ in parse_spec(shares).features][-1] == "minutes_per_row"
    assert "'plan' is not one of the summed columns" in _error(
        shares.replace("share_of: minutes", "share_of: plan")
    )
    text = GOOD.replace("    columns:\n", "    history: {sum: [plan]}\n    columns:\n")
    assert "'plan' is not a declared numeric column" in _error(text)
    text = GOOD.replace("    columns:\n", "    history: {sum: [minutes], rows: minutes}\n    columns:\n")
    assert "takes a name already in use" in _error(text)


def test_a_group_split_may_use_the_join_key():
    assert (
        parse_spec(GOOD + "split: {kind: group, group_column: subscriber_id}\n").split.group_column
        == "subscriber_id"
    )


def test_a_spec_file_must_be_named_after_its_model(tmp_path):
    (tmp_path / "other.yaml").write_text(GOOD)
    with pytest.raises(
        SpecError, match=r"other\.yaml:1: name: the file is named 'other' but declares name 'churn'"
    ):
        load_specs(tmp_path)


def test_a_spec_may_not_take_a_hand_written_models_name():
    from core.registry import check_name

    with pytest.raises(SpecError, match="belongs to a hand-written model"):
        check_name("customer_risk")


def test_a_feature_added_in_a_later_version_leaves_the_earlier_feature_services_as_they_were():
    text = GOOD.replace("name: churn\n", "name: churn\nversion: 2\n").replace(
        "      plan: {type: string, values: [basic, plus]}\n",
        "      plan: {type: string, values: [basic, plus]}\n"
        "      complaints: {type: int, min: 0, nullable: true, since: 2}\n",
    )
    text = text.replace("    columns:\n", "    history: {sum: [minutes, complaints]}\n    columns:\n")
    spec = parse_spec(text)
    assert spec.versions == [1, 2] and spec.feature_service == "churn_v2"
    v2 = [n for n, _ in spec.features]
    assert v2 == ["minutes", "plan", "complaints", "minutes_total", "complaints_total", "complaints_rows"]
    v1 = spec.at_version(1)
    assert v1.feature_service == "churn_v1"
    assert [n for n, _ in v1.features] == ["minutes", "plan", "minutes_total"]
    assert "complaints" in v1.sources[0].columns  # still ingested and validated, not learned
    assert spec.at_version(2) is spec
    with pytest.raises(ValueError, match=r"not in 1\.\.2"):
        spec.at_version(3)
    too_new = text.replace("version: 2\n", "")
    assert "since: 2 is above the spec's version 1" in _error(too_new).replace(".since:", " since:")
    not_a_feature = text.replace("nullable: true, since: 2", "nullable: true, since: 2, feature: false")
    assert "`since` is for features" in _error(not_a_feature)


def test_a_rule_baseline_is_an_expression_over_the_features():
    ok = GOOD.replace("label:\n", "model:\n  rule_baseline: {score: 'minutes / 60'}\nlabel:\n")
    assert parse_spec(ok).model.rule_baseline.score == "minutes / 60"
    assert "['hours'] are not features" in _error(ok.replace("minutes / 60", "hours / 60"))
    assert "uses ['Attribute', 'Call']" in _error(ok.replace("minutes / 60", "minutes.__class__()"))
