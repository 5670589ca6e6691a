"""The composition root: the web server, the worker pool, the job registry and observability."""
