"""A real S3-compatible server (moto) on loopback for the tests that use object storage."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.processes import background, free_port

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "verse-etl"


def boto_kwargs() -> dict[str, str]:
    """Credentials and region of the test server, as boto3 client arguments."""
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's server on a free loopback port with bucket ``verse-etl``; yield its URL."""
    port = free_port()
    moto = str(Path(sys.executable).parent / "moto_server")
    with background([moto, "-H", "127.0.0.1", "-p", str(port)]) as server:
        url = f"http://127.0.0.1:{port}"
        import boto3

        deadline = time.monotonic() + 60
        while True:
            try:
                boto3.client("s3", endpoint_url=url, **boto_kwargs()).create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        yield url
