"""Result rows of a published table, for tests: one figure per row, as an importer builds it."""

from reports.rows import published_result


def row(source, model, setting, value, n=None, protocol=None, tags=(), id_setting=None, metric="top1"):
    """``value`` of ``metric`` for ``model`` on ``setting`` from input ``source``."""
    return published_result(source, model, setting, {metric: value}, n, protocol, tags, id_setting=id_setting,
                            main_metric=metric)
