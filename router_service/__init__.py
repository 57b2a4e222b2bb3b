"""The routing gateway: classify a prompt, stream it from the expert of its cluster."""
