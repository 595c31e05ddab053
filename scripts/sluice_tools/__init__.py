"""sluice's laptop and CI tooling: the local stack, the fake provider, the CLI.

Nothing in here ships to Lambda, and the runtime package (``sluice``) never imports it.
"""
