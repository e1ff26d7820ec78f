"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph, Garage, moto ...), with boto3.

A report is the object ``<job id>/<attempt>/<filename>``. An upload is published whole or
not at all: one ``PutObject`` below the multipart threshold; above it, a multipart upload
whose every part is checked between parts (``checkpoint``) and aborted on any error or
cancellation, so that no half-written object or forgotten upload is left behind.

The sha256 the ledger records is computed here from the local file, then verified twice
over what was sent: every request that carries bytes sends their sha256
(``ChecksumSHA256``), which AWS S3 checks before accepting them; and the ETag the store
answers, the MD5 of the bytes it received, must be the MD5 of the bytes sent (per part
for a multipart upload), which also holds on servers that ignore the checksum header
(moto, older MinIO). Objects encrypted with SSE-KMS or SSE-C have ETags that are no MD5:
for them the checksum alone speaks. The whole file's sha256 goes in the object's
metadata (``x-amz-meta-sha256``) for anyone auditing the bucket.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote
from uuid import UUID

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.core.settings.delivery import StorageSettings
from app.domain.errors import Misconfigured, NotFound, StorageUnavailable
from app.domain.jobs import Artifact
from app.storage.scratch import ScratchFiles, artifact_key

_CHUNK = 1 << 20
_MISSING_BUCKET = {"NoSuchBucket", "404", "NotFound"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidToken",
    "ExpiredToken",
}


class BucketMissing(Misconfigured):
    """The bucket is not at the endpoint (the only refusal ``create_bucket`` mends)."""


def s3_client(*, endpoint_url: str | None, region: str, path_style: bool, timeout: float) -> Any:
    """A boto3 S3 client with few retries; credentials come from boto3's usual chain.

    The chain: ``AWS_*`` variables, shared files, instance roles. Few retries: a store that
    is down fails the attempt quickly, and the job's own backoff retries it.
    """
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if path_style else "auto"},
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


class S3ArtifactStore(ScratchFiles):
    """:class:`~app.domain.ports.ArtifactStore` in one bucket."""

    def __init__(
        self,
        client: Any,
        *,
        bucket: str,
        scratch: Path,
        multipart_threshold: int,
        signer: Any | None = None,
    ) -> None:
        self.client = client
        self.signer = signer or client  # presigns for the address download clients reach
        self.bucket = bucket
        self.part_size = multipart_threshold
        super().__init__(scratch)

    @classmethod
    def of(cls, storage: StorageSettings, *, scratch: Path) -> S3ArtifactStore:
        """The bucket ``storage`` names, on its service; presigned for S3_PUBLIC_URL if set."""
        client = partial(
            s3_client,
            region=storage.s3_region,
            path_style=storage.s3_path_style,
            timeout=storage.s3_timeout,
        )
        public = storage.s3_public_url
        return cls(
            client(endpoint_url=storage.s3_endpoint_url),
            bucket=storage.s3_bucket,
            scratch=scratch,
            multipart_threshold=storage.s3_multipart_threshold,
            signer=client(endpoint_url=public) if public else None,
        )

    def verify(self) -> None:
        """Refuse to start on a bucket that is missing or credentials it refuses.

        Raises:
            BucketMissing: the bucket is not at the endpoint.
            Misconfigured: the credentials or the bucket are refused, or the storage
                cannot be reached.
        """
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING_BUCKET:
                raise BucketMissing(
                    f"S3_BUCKET {self.bucket!r} does not exist at the storage endpoint; "
                    "create it first (manage.py migrate --create-bucket)."
                ) from exc
            if code in _BAD_CREDENTIALS:
                raise Misconfigured(
                    f"The storage refused the credentials for bucket {self.bucket!r} ({code}); "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the credential chain."
                ) from exc
            raise Misconfigured(f"The storage refused bucket {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:  # no credentials, endpoint unreachable
            raise Misconfigured(f"The artifact storage cannot be used: {exc}") from exc

    def create_bucket(self) -> bool:
        """Create the bucket unless it exists (a stack's first start); True if it was made."""
        try:
            self.verify()
        except BucketMissing:
            pass
        else:
            return False
        region = self.client.meta.region_name
        where = (
            {}
            if region in (None, "us-east-1")
            else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        with _unavailable("create bucket"):
            self.client.create_bucket(Bucket=self.bucket, **where)
        return True

    def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the bucket answers."""
        with _unavailable("ping"):
            self.client.head_bucket(Bucket=self.bucket)

    def save(
        self,
        temp: Path,
        *,
        job_id: UUID,
        filename: str,
        content_type: str,
        attempt: int | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> Artifact:
        """Upload ``temp`` under the job, whole or not at all, then remove the scratch file.

        One ``PutObject`` up to the multipart threshold; above it, a multipart upload that
        calls ``checkpoint`` before each part and is aborted on any error. The bytes sent are
        checked as the module docstring says; the artifact records their size and sha256.

        Raises:
            StorageUnavailable: the store failed, or received other bytes than were sent.
        """
        key = artifact_key(job_id, filename, attempt)
        size, sha256, md5 = _digest(temp)
        extra = {"ContentType": content_type, "Metadata": {"sha256": sha256}}
        with _unavailable("upload"):
            if size <= self.part_size:
                with temp.open("rb") as body:
                    answer = self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=body,
                        ChecksumSHA256=_b64(bytes.fromhex(sha256)),
                        **extra,
                    )
                try:
                    _check_etag(answer, md5, key)
                except StorageUnavailable:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                    raise
            else:
                self._multipart(temp, key, extra, checkpoint or (lambda: None))
        temp.unlink(missing_ok=True)
        return Artifact(
            key=key,
            filename=Path(key).name,
            content_type=content_type,
            size_bytes=size,
            sha256=sha256,
        )

    def _multipart(
        self, temp: Path, key: str, extra: dict[str, Any], checkpoint: Callable[[], None]
    ) -> None:
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", **extra
        )["UploadId"]
        try:
            parts = []
            with temp.open("rb") as fh:
                for number, chunk in enumerate(_parts(fh, self.part_size), start=1):
                    checkpoint()
                    checksum = _b64(hashlib.sha256(chunk).digest())
                    answer = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=checksum,
                    )
                    _check_etag(answer, _md5(chunk), f"{key} part {number}")
                    parts.append(
                        {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}
                    )
            checkpoint()
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:  # cancelled, superseded, storage gone, process stopping
            with suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    def delete(self, artifact: Artifact) -> None:
        """Remove the object (the store answers the same whether or not it was there)."""
        with _unavailable("delete"):
            self.client.delete_object(Bucket=self.bucket, Key=artifact.key)

    def read(self, artifact: Artifact, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` to ``end`` (inclusive; ``None``: the last) in chunks.

        The object is requested before the first chunk is returned.

        Raises:
            NotFound: ``ARTIFACT_NOT_FOUND``: the object is no longer in the bucket.
            StorageUnavailable: the store did not answer.
        """
        last = "" if end is None else str(end)
        with _unavailable("read"):
            try:
                answer = self.client.get_object(
                    Bucket=self.bucket, Key=artifact.key, Range=f"bytes={start}-{last}"
                )
            except ClientError as exc:
                if _code(exc) in {"NoSuchKey", "404"}:
                    raise NotFound(
                        f"The report file {artifact.key} is no longer in the storage.",
                        code="ARTIFACT_NOT_FOUND",
                    ) from exc
                raise
        body = answer["Body"]
        return _stream(body)

    def url_for(self, artifact: Artifact, *, expires: int) -> str | None:
        """A presigned GET of the object for ``expires`` seconds, served as a download.

        Signed by ``signer``, for the address download clients reach.
        """
        disposition = f"attachment; filename*=utf-8''{quote(artifact.filename)}"
        with _unavailable("presign"):
            url: str = self.signer.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": artifact.key,
                    "ResponseContentType": artifact.content_type,
                    "ResponseContentDisposition": disposition,
                },
                ExpiresIn=expires,
            )
        return url


@contextmanager
def _unavailable(action: str) -> Iterator[None]:
    """Turn the client's transport and server errors into ``StorageUnavailable``."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"The artifact storage failed ({action}): {exc}") from exc


def _stream(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(_CHUNK)
    finally:
        body.close()


def _digest(path: Path) -> tuple[int, str, str]:
    """Size, sha256 and MD5 of a local file, in one read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha256.hexdigest(), md5.hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _check_etag(answer: dict[str, Any], md5: str, what: str) -> None:
    """The store received other bytes than were sent: refuse them (the attempt retries)."""
    if answer.get("ServerSideEncryption") == "aws:kms" or answer.get("SSECustomerAlgorithm"):
        return  # their ETag is no MD5; ChecksumSHA256 was checked by the store
    etag = str(answer.get("ETag", "")).strip('"')
    if etag != md5:
        raise StorageUnavailable(f"The storage received other bytes for {what} (ETag {etag}).")


def _parts(fh: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
