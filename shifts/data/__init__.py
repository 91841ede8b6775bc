"""Package data: class lists the datasets themselves do not ship."""
