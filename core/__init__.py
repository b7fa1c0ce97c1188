"""The pure core: config keys, settings, rendered files and the deploy plan. Nothing here imports Pulumi."""
