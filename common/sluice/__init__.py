"""sluice: the runtime package that ships inside every provider's Lambda bundle.

It imports only boto3, botocore and pydantic: nothing from the laptop tooling (sluice_tools).
"""

__version__ = "0.1.0"
