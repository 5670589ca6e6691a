"""Diagnosis (pure): reading CI logs in every form, classifying each failed step, reading workflow commands."""
