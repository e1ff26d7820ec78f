"""Upload one 50 MB report to a local S3 server (moto's) with boto3 and with obstore.

Starts ``python -m moto.server`` on a free loopback port, writes a file of random bytes,
then uploads it ``--repeat`` times in alternating rounds with each client, and prints a
Markdown table of the median and min-max wall time and throughput:

- ``platform (boto3)``: ``S3ArtifactStore.save``, what a worker runs: a sha256 + MD5 pass
  over the file, then sequential 16 MiB parts, each with its ChecksumSHA256 and its ETag
  checked;
- ``boto3 upload_file``: s3transfer's managed upload (8 MiB parts, 10 threads);
- ``obstore put``: obstore (Rust, object_store) multipart put (default chunks, 12 at once).

obstore is in the bench extra: ``.venv/bin/pip install -e '.[bench]'``.

    .venv/bin/python benchmarks/storage_upload.py --size-mb 50 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import boto3
import httpx
from app.storage.s3 import S3ArtifactStore, s3_client
from botocore.config import Config

BUCKET = "bench"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = _port()
    url = f"http://127.0.0.1:{port}"
    moto = start_moto(port)
    work = Path(tempfile.mkdtemp(prefix="storage-bench-"))
    try:
        client = s3_client(endpoint_url=url, region="us-east-1", path_style=True, timeout=60)
        client.create_bucket(Bucket=BUCKET)
        source = work / "report.bin"
        source.write_bytes(os.urandom(args.size_mb * 1024 * 1024))
        runs = _clients(url, client, work, source)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, upload in runs.items():
                started = time.perf_counter()
                upload()
                times[name].append(time.perf_counter() - started)
        print(f"{args.size_mb} MB to moto on loopback, {args.repeat} rounds, median (min-max)\n")
        print("| client | seconds | MB/s |")
        print("| --- | --- | --- |")
        for name, seconds in times.items():
            median = statistics.median(seconds)
            print(
                f"| {name} | {median:.2f} ({min(seconds):.2f}-{max(seconds):.2f}) "
                f"| {args.size_mb / median:.0f} |"
            )
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def _clients(url: str, client: object, work: Path, source: Path) -> dict[str, Callable[[], None]]:
    import obstore
    from obstore.store import S3Store

    store = S3ArtifactStore(
        client, bucket=BUCKET, scratch=work / "scratch", multipart_threshold=16 * 1024 * 1024
    )

    def platform() -> None:
        temp = store.temp_path(uuid4(), "bin")
        os.link(source, temp)  # save() consumes its temp file
        store.save(temp, job_id=uuid4(), filename="r.bin", content_type="x", attempt=1)

    plain = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )

    def managed() -> None:
        plain.upload_file(str(source), BUCKET, f"managed/{uuid4()}")

    rust = S3Store(
        BUCKET,
        endpoint=url,
        region="us-east-1",
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    def obstore_put() -> None:
        obstore.put(rust, f"obstore/{uuid4()}", source)

    return {"platform (boto3)": platform, "boto3 upload_file": managed, "obstore put": obstore_put}


if __name__ == "__main__":
    main()
