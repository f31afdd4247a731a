"""A bucket on the local S3 server (the session's ``s3_endpoint`` fixture), with test credentials."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest


@contextmanager
def s3_credentials(secret: str = "test-secret") -> Iterator[None]:
    """Credentials in the environment, as a deployment gives them, for the duration of the block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
        patch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield


def create_bucket(endpoint: str, name: str):
    """A new bucket on the local S3 server; returns the client to read what was published."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client
