"""expert-deploy: deployment orchestration and engine builds for the Expert Router architecture."""

__version__ = "0.1.0"
