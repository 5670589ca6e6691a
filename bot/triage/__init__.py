"""Triage: the pure rules, CODEOWNERS, the triage job and the review lane."""
