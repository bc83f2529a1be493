from visionkit.tracking.mlflow_tracker import MlflowTracker, NullTracker, flatten

__all__ = ["MlflowTracker", "NullTracker", "flatten"]
