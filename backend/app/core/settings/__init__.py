"""The groups of :class:`app.core.config.Settings`, one module per idea; each group builds
the policy its adapters or services take (``settings.<group>.policy(...)``)."""
