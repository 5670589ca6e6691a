"""GitHub: the REST client (rate limits, error mapping, the App's tokens) and the typed webhook payloads."""
