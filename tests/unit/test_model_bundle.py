"""Model metadata: a trained model's version is a content hash of what shaped it."""

from __future__ import annotations

from pathlib import Path

from core.model_bundle import FeatureSpec, ModelMetadata, file_sha256

FIELDS = dict(
    task="regression",
    label="y",
    entity="user",
    join_keys=["id"],
    feature_service="svc_v1",
    features=[FeatureSpec("x", "Float64", False)],
    prediction_type="RawFormulaVal",
    params={"depth": 6},
)


def test_the_version_changes_with_the_training_data_or_the_fingerprint_and_only_then(tmp_path: Path):
    data = tmp_path / "train.parquet"
    data.write_bytes(b"rows v1")
    a = ModelMetadata.trained("m", data, {"depth": 6, "iterations": 100}, **FIELDS)
    b = ModelMetadata.trained("m", data, {"iterations": 100, "depth": 6}, **FIELDS)
    assert a.version == b.version and a.version.startswith("m-") and len(a.version) == len("m-") + 12
    assert a.training_data_hash == file_sha256(data)
    assert ModelMetadata.trained("m", data, {"depth": 6, "iterations": 101}, **FIELDS).version != a.version
    data.write_bytes(b"rows v2")
    c = ModelMetadata.trained("m", data, {"depth": 6, "iterations": 100}, **FIELDS)
    assert c.version != a.version and c.training_data_hash != a.training_data_hash
    assert ModelMetadata.from_dict(c.__dict__ | {"features": [f.__dict__ for f in c.features]}) == c
