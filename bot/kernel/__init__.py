"""The small kernel every layer may use: errors, problem documents, settings, the repository config and job targets."""
