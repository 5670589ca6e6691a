"""Operator tools: doctor, replay, redeliver and the local ``shepherd fix`` / ``diagnose``."""
