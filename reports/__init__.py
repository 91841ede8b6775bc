"""Trend fits, effective robustness, figures, PDF reports and the bundled testbed."""
