"""sdlocal on a Ray Serve cluster (``sdlocal cluster serve``): one ingress with the A1111 API, GPU generators.

Nothing in this package is imported by ``sdlocal serve``; only ``config`` imports without Ray installed (the
``cluster`` extra: ``pip install "sdlocal[cluster]"``).
"""
