"""Publishing to S3: the bucket, what to publish for investors, and an upload that says what it did.

The S3 client is dagster-aws's ``S3Resource`` (resource key ``s3``), whose ``endpoint_url`` points at
AWS or at any S3-compatible server. Credentials come from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, or a profile), never from a config file.
"""

from __future__ import annotations

import os

from botocore.exceptions import BotoCoreError, ClientError
from dagster import ConfigurableResource, Failure
from dagster_aws.s3 import S3Resource
from pydantic import Field


def default_s3() -> S3Resource:
    """S3 at PROD_SYSTEM_S3_ENDPOINT (e.g. http://127.0.0.1:9000), or AWS itself when unset."""
    return S3Resource(
        endpoint_url=os.environ.get("PROD_SYSTEM_S3_ENDPOINT") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


class PublishingResource(ConfigurableResource):
    """Where reports and investor plots go, and which runs the investor plots show."""

    bucket: str = Field(
        default_factory=lambda: os.environ.get("PROD_SYSTEM_S3_BUCKET", "prod-system-reports"),
        description="S3 bucket of the published reports and plots (it must exist)",
    )
    investor_run_mode: str = Field(
        default="prod", description="run mode of the live sessions in the investor plots: prod or paper_trading"
    )
    history_start: str = Field(default="2019-01-01", description="first day of the historical simulation (UTC)")
    show_input: bool = Field(
        default=False,
        description="the investors' notebook's HTML shows its code cells too (false: its outputs only)",
    )

    def upload(self, s3: S3Resource, key: str, body: bytes, content_type: str) -> dict:
        """Put one object; return its address and size for the materialization's metadata."""
        client = s3.get_client()
        try:
            client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, CacheControl="max-age=60"
            )
        except client.exceptions.NoSuchBucket:
            raise Failure(f"S3 bucket {self.bucket!r} does not exist at {s3.endpoint_url or 'AWS'}") from None
        except (BotoCoreError, ClientError) as error:  # the messages name the call, never the credentials
            raise Failure(f"upload to s3://{self.bucket}/{key} failed: {error}") from None
        return {"s3_uri": f"s3://{self.bucket}/{key}", "bytes": len(body), "content_type": content_type}
