"""Compiled kernels of the hardware model (numba, ``cache=True``).

Imported only when the compiled engine is selected (:mod:`vcmm.hw.engine`): nothing
here is needed by the plain Python paths, which stay the reference.  Each kernel works
on plain arrays built by a Python driver next to the model it speeds up
(:mod:`vcmm.hw.tlbarrays`, :mod:`vcmm.hw.stream`).
"""
