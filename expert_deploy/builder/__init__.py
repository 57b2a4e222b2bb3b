"""Engine builds: toolchain → argv recipes, pre-flight checks, content-addressed cache, runners.

Modules (import what you need; this package imports nothing at load time, so the CLI starts
fast and ``docker`` is loaded only when a container build actually runs):

    recipes.py     pure argv builders (convert_checkpoint / quantize / trtllm-build)
    preflight.py   pure checks that return problems with a fix
    cache.py       cache key, manifest, verification and atomic publish
"""
