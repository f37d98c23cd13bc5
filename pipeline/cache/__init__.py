"""The per-stage registry cache: the build context and its .dockerignore rules,
content-addressed keys, cache tags, the registry probe, and the plan that says which stage to
restore, build or skip."""
