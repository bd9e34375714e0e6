"""core.explain and core.predict.from_raw: what the API and the batch stages both rely on."""

from __future__ import annotations

import numpy as np
import pytest

from core.explain import reasons, segmenter
from core.model_bundle import FeatureSpec, ModelMetadata
from core.predict import from_raw


def _meta(**extra) -> ModelMetadata:
    return ModelMetadata(
        name="m",
        version="m-1",
        task="classification",
        label="y",
        entity="customer",
        join_keys=["customer_id"],
        feature_service="m_v1",
        features=[
            FeatureSpec("kyc_level", "String", True),
            FeatureSpec("declined_count_30d", "Int64", False),
            FeatureSpec("night_share_90d", "Float64", False),
            FeatureSpec("account_age_days", "Float64", False),
        ],
        prediction_type="Probability",
        params={},
        training_data_hash="x",
        created_at="now",
        extra=extra,
    )


def test_segments_are_half_open_intervals_from_each_lower_bound():
    meta = _meta(
        segments=[{"name": "High", "min": 0.35}, {"name": "Low", "min": 0.0}, {"name": "Medium", "min": 0.08}]
    )
    segment = segmenter(meta)
    assert segment is not None
    assert [segment(p) for p in (0.0, 0.0799, 0.08, 0.3499, 0.35, 1.0)] == [
        "Low",
        "Low",
        "Medium",
        "Medium",
        "High",
        "High",
    ]
    assert segmenter(_meta()) is None
    assert segmenter(_meta(segments=[{"name": "Low", "min": 0.1}]))(0.05) is None, "below every bound"


def test_reasons_are_the_strongest_positive_contributions_with_a_phrase_and_a_value():
    meta = _meta(
        reasons={
            "kyc_level": "only '{value}' KYC checks",
            "declined_count_30d": "{value:.0f} declined transactions in 30 days",
            "night_share_90d": "{value:.0%} of transactions at night",
        },
        max_reasons=2,
    )
    contrib = np.array([0.4, 1.2, 0.9, 2.0])  # account_age_days is strongest but has no phrase
    got = reasons(contrib, ["basic", 7, 0.25, 3.0], meta)
    assert [r["text"] for r in got] == ["7 declined transactions in 30 days", "25% of transactions at night"]
    assert got[0] == {
        "feature": "declined_count_30d",
        "value": 7,
        "contribution": 1.2,
        "text": got[0]["text"],
    }
    # negative contributions never become reasons; a missing value is skipped, not printed as "None"
    got = reasons(np.array([0.4, -1.0, 0.9, 0.0]), ["basic", 7, None, 3.0], meta)
    assert [r["feature"] for r in got] == ["kyc_level"]


def test_from_raw_applies_the_link_or_the_calibration():
    raw = np.array([-3.0, 0.0, 2.5])
    np.testing.assert_allclose(from_raw(raw, _meta()), 1 / (1 + np.exp(-raw)))
    cal = _meta(calibration={"method": "platt", "a": 0.5, "b": -1.0})
    np.testing.assert_allclose(from_raw(raw, cal), 1 / (1 + np.exp(-(0.5 * raw - 1.0))))
    with pytest.raises(ValueError, match="unknown calibration"):
        from_raw(raw, _meta(calibration={"method": "isotonic"}))


def test_a_numeric_phrase_with_a_text_value_says_the_value_plainly():
    meta = _meta(reasons={"declined_count_30d": "{value:.0f} declined transactions in 30 days"})
    got = reasons(np.array([0.0, 1.0, 0.0, 0.0]), ["basic", "many", 0.1, 3.0], meta)
    assert [r["text"] for r in got] == ["many declined transactions in 30 days"]
