"""The repair: planning the ladder over a failed job (blueprint) and the repair job that runs, verifies and pushes."""
