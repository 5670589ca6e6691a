"""Git: the one runner every git process starts through, and the workspaces (mirrors, worktrees) built on it."""
