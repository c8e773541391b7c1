"""Shared node libraries: provisioning/app config, supervision, link and outbox."""
