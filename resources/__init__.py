"""Dagster-facing resources: object storage (S3 / local / memory), IO managers and the embedded
SeaweedFS server used as a local S3 endpoint. Modules are imported explicitly."""
