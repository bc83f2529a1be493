from visionkit.export.savedmodel import export_savedmodel, next_version_dir, verify_savedmodel

__all__ = ["export_savedmodel", "next_version_dir", "verify_savedmodel"]
