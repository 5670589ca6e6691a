"""The job-environment subsystem: reproduce a failing CI job before verifying a fix.

A fix is only as good as the check that verifies it, and real checks need what the CI job set up
first: the working directory, ``env`` at every level, ``services:`` and the install steps before
the failing one (DESIGN.md, "Job environment (reproduce, then verify)"; issue #13).

- ``bot.jobenv.workflow``: the failing job as the base branch's workflow describes it (pure).
- ``bot.jobenv.expressions``: the side-effect-free subset of GitHub Actions expressions it
  evaluates (pure).
- ``bot.jobenv.services``: private per-job postgres, redis and mysql/mariadb instances.

Toolchains, the replay of setup steps in the sandbox, the warm pool and services build on the
``WorkflowJob`` model of ``bot.jobenv.workflow``.
"""
