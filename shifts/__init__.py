"""Dataset readers: one module per shift, each reading the dataset's own on-disk layout."""
