from expert_deploy.cli import entrypoint

entrypoint()
