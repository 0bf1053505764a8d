"""fastadapt's compiled side (installed as ``fastadapt.kernels``).

``math`` holds each rule's per-element update as plain Python; ``cpu`` compiles
it into ``prange`` loop drivers and ``cuda`` into grid-stride CUDA kernels.
"""
