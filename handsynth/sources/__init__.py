"""Readers of external pose data sets, each turning a published file format into project tables.

Readers stream their input (paths or binary file objects such as an S3 body) because the
published annotation files run to gigabytes; they never import Dagster.
"""
