"""Attachments: files sent with messages (docs/attachments.md).

storage.py  content-addressed storage, one copy per SHA-256: a local directory, or S3
intake.py   an attachment as a caller sends it (base64, a path in the project, an upload) -> stored
images.py   images to WebP, scaled to a size cap (Pillow); which may be shown as images
headers.py  an image's declared size and a JPEG's scan budget, read in bounded work (no decoding)

The messages name their attachments (name, media type, size, sha256); tools/attachments.py
gives them out to the agents that may read the message.
"""
