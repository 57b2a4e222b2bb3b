"""Artifacts a deployment needs: checkpoints, engines, the router model, rendered files."""
