"""Numba's on-disk kernel cache, stamped with every kernel source file.

Numba stamps a cached kernel with the file that defines its Python function
only. The drivers are defined in ``loops.py`` but also depend on ``math.py``
and on the target module that compiles them, so an edit to either would keep
serving kernels built from the old code. ``watching`` derives a cache class
whose stamp covers those files too.
"""
import os


def watching(cache_class, *paths):
    """A subclass of Numba's ``cache_class`` whose stamp also covers ``paths``."""
    impl_class = cache_class._impl_class

    class Impl(impl_class):
        _locator_classes = [_stamping(c, paths) for c in impl_class._locator_classes]

    return type(cache_class.__name__, (cache_class,), {"_impl_class": Impl})


def _stamping(locator_class, paths):
    def get_source_stamp(self):
        stats = [os.stat(p) for p in paths]
        return (locator_class.get_source_stamp(self),
                *((st.st_mtime, st.st_size) for st in stats))
    return type(locator_class.__name__, (locator_class,),
                {"get_source_stamp": get_source_stamp})
