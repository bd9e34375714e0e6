import numpy as np

from pipelines.common.ltv_metrics import decile_mape, deciles, ltv_metrics, normalized_gini


def test_normalized_gini_bounds_and_order():
    rng = np.random.default_rng(0)
    y = rng.exponential(1, 2000) * (rng.random(2000) < 0.1)
    assert normalized_gini(y, y) == 1.0
    assert normalized_gini(y, -y) < -0.9
    noisy = y + rng.normal(0, 0.5, len(y))
    assert 0 < normalized_gini(y, noisy) < 1
    assert normalized_gini(y, y + rng.normal(0, 0.05, len(y))) > normalized_gini(y, noisy)


def test_deciles_and_mape():
    y = np.arange(1, 101, dtype=float)
    d = deciles(y, y, 10)
    assert len(d) == 10 and np.allclose(d["label"], d["prediction"])
    assert decile_mape(y, y) == 0.0
    assert np.isclose(decile_mape(y, 2 * y), 1.0)
    assert deciles(y, np.zeros_like(y), 10)["bin"].nunique() == 10  # ties never merge bins


def test_ltv_metrics_keys():
    y = np.array([0, 0, 0, 5.0, 0, 1, 0, 0, 20, 0] * 10)
    m = ltv_metrics(y, y * 0.5 + 0.1)
    assert {
        "normalized_gini",
        "spearman",
        "rmse",
        "mae",
        "decile_mape",
        "total_predicted",
        "total_actual",
    } <= set(m)
    assert m["total_actual"] == y.sum()


def test_gini_of_tied_predictions_does_not_depend_on_row_order():
    import numpy as np

    from pipelines.common.ltv_metrics import normalized_gini

    y = np.array([0, 0, 5, 0, 1, 0, 9, 0])
    assert normalized_gini(y, np.zeros(8)) == 0.0  # a constant ranks nobody
    assert normalized_gini(y[::-1], np.zeros(8)) == 0.0
    tied = np.array([1, 1, 2, 1, 1, 1, 2, 1.0])
    assert normalized_gini(y, tied) == normalized_gini(y[::-1], tied[::-1]) > 0.5
    assert np.isnan(normalized_gini(np.zeros(8), tied))  # no label to rank: undefined, not a number
