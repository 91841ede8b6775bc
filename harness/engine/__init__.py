"""The engine: predicts models on shifts and keeps the run directory.

It imports every plugin (``models``, ``shifts``) through the registry; the core at the top of
``harness`` (api, registry, config, metrics, transforms, files) imports no plugin and no engine module,
so plugins and ``reports`` can depend on the core alone.
"""
