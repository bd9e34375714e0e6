"""The scoring service: FastAPI app, model loading, online features and the prediction request log."""
