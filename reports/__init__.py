"""Descriptive district reports: tables, narrative, charts and the HTML page."""
