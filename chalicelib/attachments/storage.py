"""Content-addressed storage of attachment content: stored once per SHA-256, however often
it is sent. A local directory (ATTACHMENTS_DIR/ab/cdef...) or an S3 bucket (ATTACHMENTS_BUCKET,
keys blobs/ab/abcdef...). Writing content that is already there is a no-op, so a write that
is repeated (or whose message rolled back) costs nothing and loses nothing.

Content is shared by everyone who stores it, so a SHA-256 alone must not let a caller name it
(it would read another project's file, or learn that it is stored). An upload is therefore kept
per uploader (a credential, `uploader`) for RECEIPT_SECONDS: locally a receipt file beside the
content (ATTACHMENTS_DIR/.uploads/<uploader>/<sha256>, the PUT route writes it); on S3 the
presigned PUT goes to uploads/<uploader>/<sha256>, which S3 accepts with exactly that content
and `claim` copies into blobs/ (the bucket's lifecycle deletes uploads/ after a day)."""

import base64
import hashlib
import os
import re
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1024 * 1024
DOWNLOAD_SECONDS = 300  # presigned GET: long enough to start the download, short enough to leak little
UPLOAD_SECONDS = 900  # a presigned PUT's validity
RECEIPT_SECONDS = 86_400  # how long an upload names its content for its uploader: send it within a day
OWNER = ".collected-for"  # names the one database that deletes unused content here (tools/attachment_refs.py)
RECEIPTS = ".uploads"  # local upload receipts, beside the content
CACHE_CONTROL = "private, max-age=3600, immutable"  # a download's: content-addressed, it never changes


def uploader(credential: str | None) -> str | None:
    """Whose uploads a caller's are (a path segment), from its credential (auth.credential); None
    without one (no authentication, the operator): one caller, who may name any stored content."""
    return None if credential is None else hashlib.sha256(credential.encode()).hexdigest()[:32]


def check_sha256(sha256: str) -> str:
    if not SHA256.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 in hex: {sha256!r}")
    return sha256


def content_disposition(name: str, disposition: str = "attachment") -> str:
    """`attachment` (or `inline`: the web UI's raster images), with the name for any browser
    (RFC 6266): an ASCII fallback without quotes or control characters, and `filename*`."""
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]', "_", name) or "attachment"
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


class ContentMissing(FileNotFoundError):
    """Content a message names is not in the storage (the bucket's answer; locally the file's own error)."""


class TooLarge(Exception):
    pass


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / check_sha256(sha256)[:2] / sha256[2:]

    def _stat(self, sha256: str) -> os.stat_result | None:
        try:
            return self.path(sha256).stat()
        except FileNotFoundError:
            return None

    def size(self, sha256: str) -> int | None:
        found = self._stat(sha256)
        return found.st_size if found else None

    def modified(self, sha256: str) -> float | None:
        """When the content was last written (a Unix time); None if it is not stored."""
        found = self._stat(sha256)
        return found.st_mtime if found else None

    def put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if self.size(sha256) is None:
            with self.writer(len(data)) as writer:
                writer.write(data)
                writer.commit()
        return sha256

    def writer(self, limit: int) -> "LocalWriter":
        return LocalWriter(self, limit)

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def chunks(self, sha256: str):
        with open(self.path(sha256), "rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk

    def download_url(self, sha256: str, name: str, media_type: str) -> str | None:
        return None  # local: the REST route serves it (transports/attachment_routes.py)

    def walk(self, after: str, limit: int) -> list[tuple[str, float]]:
        """Up to `limit` stored contents after the SHA-256 `after` (in order): (sha256, when
        last written, as a Unix time)."""
        found: list[tuple[str, float]] = []
        folders = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir()) if self.root.is_dir() else []
        for folder in folders:
            if len(found) >= limit:
                break
            if folder < after[:2]:
                continue
            for name in sorted(os.listdir(self.root / folder)):
                sha256 = folder + name
                if sha256 > after and SHA256.fullmatch(sha256):
                    try:
                        found.append((sha256, (self.root / folder / name).stat().st_mtime))
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                    if len(found) >= limit:
                        break
        return found

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def owner(self) -> str | None:
        """The database that claimed this storage for collection (tools/attachment_refs.py), if any."""
        try:
            return (self.root / OWNER).read_text(errors="replace")
        except FileNotFoundError:
            return None

    def take(self, owner: str) -> bool:
        """Claim the storage for the database `owner` unless one has; whether this did."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.root, prefix=".owner-") as file:
            file.write(owner)
            file.flush()
            try:
                os.link(file.name, self.root / OWNER)  # all at once, and never over another's
                return True
            except FileExistsError:
                return False

    def upload_target(self, sha256: str, size: int, by: str | None) -> dict:
        return {"method": "PUT", "url": "/api/attachments", "headers": {"Content-Type": "application/octet-stream"}}

    def receipt(self, by: str, sha256: str) -> Path:
        return self.root / RECEIPTS / by / check_sha256(sha256)

    def give_receipt(self, by: str, sha256: str) -> None:
        """`by` uploaded this content (the PUT route, once it is stored)."""
        path = self.receipt(by, sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # (again: the day starts anew)

    def claim(self, sha256: str, by: str) -> int | None:
        """The content's size if `by` uploaded it within RECEIPT_SECONDS, else None."""
        try:
            given = self.receipt(by, sha256).stat().st_mtime
        except FileNotFoundError:
            return None
        return self.size(sha256) if time.time() - given < RECEIPT_SECONDS else None

    def expire_receipts(self, limit: int) -> int:
        """Delete up to `limit` receipts past RECEIPT_SECONDS (a retention run's); how many."""
        root, before, expired = self.root / RECEIPTS, time.time() - RECEIPT_SECONDS, 0
        for folder in (os.scandir(root) if root.is_dir() else ()):
            for entry in os.scandir(folder.path):
                if expired >= limit:
                    return expired
                try:
                    if entry.stat().st_mtime < before:
                        os.unlink(entry.path)
                        expired += 1
                except FileNotFoundError:  # another run's
                    continue
        return expired


class LocalWriter:
    """Streams content into a temporary file while hashing it; `commit()` moves it to its
    address (atomically: a reader never sees half a file). More than `limit` bytes: TooLarge."""

    def __init__(self, storage: LocalStorage, limit: int) -> None:
        self.storage, self.limit = storage, limit
        storage.root.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.NamedTemporaryFile(dir=storage.root, prefix=".upload-", delete=False)
        self.hash, self.size = hashlib.sha256(), 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"more than {self.limit} bytes")
        self.hash.update(chunk)
        self.file.write(chunk)

    def commit(self) -> str:
        sha256 = self.hash.hexdigest()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        target = self.storage.path(sha256)
        target.parent.mkdir(exist_ok=True)
        os.replace(self.file.name, target)
        return sha256

    def __enter__(self) -> "LocalWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.file.close()
        if os.path.exists(self.file.name):
            os.unlink(self.file.name)


class S3Storage:
    def __init__(self, bucket: str, client=None) -> None:
        if client is None:
            import boto3  # only here: local mode never needs it
            from botocore.config import Config

            # SigV4: presigned URLs that sign their headers (length, checksum), in every region.
            client = boto3.client("s3", config=Config(signature_version="s3v4"))
        self.bucket, self.client = bucket, client

    @staticmethod
    def key(sha256: str) -> str:
        return f"blobs/{check_sha256(sha256)[:2]}/{sha256}"

    @staticmethod
    def upload_key(by: str, sha256: str) -> str:
        return f"uploads/{by}/{check_sha256(sha256)}"

    def _head(self, sha256: str, key: str | None = None) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key or self.key(sha256))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def size(self, sha256: str) -> int | None:
        head = self._head(sha256)
        return head["ContentLength"] if head else None

    def modified(self, sha256: str) -> float | None:
        head = self._head(sha256)
        return head["LastModified"].timestamp() if head else None

    def claim(self, sha256: str, by: str) -> int | None:
        """The content's size if `by` uploaded it within RECEIPT_SECONDS (to its presigned PUT,
        uploads/...), copied into blobs/ if it is not there yet; else None."""
        upload = self._head(sha256, self.upload_key(by, sha256))
        if upload is None or time.time() - upload["LastModified"].timestamp() >= RECEIPT_SECONDS:
            return None
        if self.size(sha256) is None:  # S3 checked its checksum when it was put: it is this content
            self.client.copy_object(Bucket=self.bucket, Key=self.key(sha256),
                                    CopySource={"Bucket": self.bucket, "Key": self.upload_key(by, sha256)})
        return upload["ContentLength"]

    def expire_receipts(self, limit: int) -> int:
        return 0  # the bucket's lifecycle deletes uploads/ after a day (infra/template.yaml)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).digest()
        sha256 = digest.hex()
        if self.size(sha256) is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key(sha256), Body=data,
                                   ChecksumSHA256=base64.b64encode(digest).decode())
        return sha256

    def read(self, sha256: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise ContentMissing(sha256) from None
            raise

    def chunks(self, sha256: str):
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
        while chunk := body.read(CHUNK):
            yield chunk

    def walk(self, after: str, limit: int) -> list[tuple[str, float]]:
        start = {"StartAfter": self.key(after)} if after else {}
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix="blobs/", MaxKeys=limit, **start)
        return [(item["Key"].rsplit("/", 1)[-1], item["LastModified"].timestamp()) for item in listed.get("Contents", [])
                if SHA256.fullmatch(item["Key"].rsplit("/", 1)[-1])]

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def owner(self) -> str | None:
        from botocore.exceptions import ClientError

        try:
            marker = self.client.get_object(Bucket=self.bucket, Key=f"blobs/{OWNER}")["Body"]
            return marker.read(4096).decode(errors="replace")  # bounded: a marker names a database
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def take(self, owner: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=f"blobs/{OWNER}", Body=owner.encode(), IfNoneMatch="*")
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def download_url(self, sha256: str, name: str, media_type: str) -> str:
        from .intake import served_type

        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(sha256), "ResponseContentType": served_type(media_type),
                    "ResponseContentDisposition": content_disposition(name)},
            ExpiresIn=DOWNLOAD_SECONDS,
        )

    def upload_target(self, sha256: str, size: int, by: str | None) -> dict:
        """A presigned PUT of exactly this content (S3 refuses another length or checksum): to
        the uploader's uploads/ (see the module docstring), or without one straight to blobs/."""
        checksum = base64.b64encode(bytes.fromhex(check_sha256(sha256))).decode()
        key = self.key(sha256) if by is None else self.upload_key(by, sha256)
        url = self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentLength": size, "ChecksumSHA256": checksum},
            ExpiresIn=UPLOAD_SECONDS,
        )
        return {"method": "PUT", "url": url, "headers": {"Content-Length": str(size), "x-amz-checksum-sha256": checksum}}


def _missing(exc) -> bool:
    """An S3 error that says the object is not there (HEAD answers a bare 404, GET NoSuchKey)."""
    return exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")


def storage(settings) -> LocalStorage | S3Storage:
    if settings.attachments_bucket:
        return _s3(settings.attachments_bucket)
    return LocalStorage(settings.attachments_dir)


@lru_cache(maxsize=4)
def _s3(bucket: str) -> S3Storage:
    return S3Storage(bucket)  # a boto3 client costs ~50 ms to make: one per process (safe to lose)
