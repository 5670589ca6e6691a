"""Job environments: reproduce the CI job (workflow, toolchains, dependencies, services) before verifying a fix."""
