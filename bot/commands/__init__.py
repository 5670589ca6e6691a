"""Commands: the ``/shepherd`` grammar and buttons, the command job, and ``explain``."""
