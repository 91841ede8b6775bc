"""JSON Schemas of the submission card and bundle manifest (package data)."""
