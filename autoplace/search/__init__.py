"""The search: space, zero-shot screen, study, workers, selection, report.

`autoplace.search(...)` is both this package and the Python API's search function: importing any module of the
package makes `autoplace.search` this package, so the package itself is callable and runs `autoplace.api.search`.
"""
import sys
import types


class _CallableSearch(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ..api import search
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableSearch
