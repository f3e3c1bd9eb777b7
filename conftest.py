"""Registers the suite's fixture modules; nothing else lives here."""

pytest_plugins = [
    "fixtures.options",
    "fixtures.catalog",
    "fixtures.cluster",
    "fixtures.namespaces",
    "fixtures.hosts",
    "fixtures.workloads",
    "fixtures.reporting",
    "fixtures.progress",
]
