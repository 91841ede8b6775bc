"""Model wrappers: constructors returning a harness.api.Classifier."""
