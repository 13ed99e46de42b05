"""The report: ``build`` assembles report.md from the sections ``speed``, ``accuracy`` and ``decode``."""
