"""The local stack: moto in server mode, a local Lambda service, a fake provider."""
