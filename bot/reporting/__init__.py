"""Reporting: the one sticky-comment composer, the check run's text, the machine-readable outcome, suggestions."""
