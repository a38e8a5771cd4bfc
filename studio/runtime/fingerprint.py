"""A fingerprint of a model's weights, to tell two bases of the same shape apart (PEFT cannot)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

HASHED = re.compile(r"^[0-9a-f]{64}$")  # the hub cache names blobs by their sha256
MAX_HASHED_BYTES = 256 * 2**20


def weights_fingerprint(folder: Path) -> str | None:
    """sha256 over the weight files' own sha256s: free for hub-cache files (their blob names), computed for
    small local files, None for large local files (too slow to hash at every load)."""
    parts = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        target = path.resolve()
        if HASHED.match(target.name):
            parts.append(target.name)
        elif target.stat().st_size <= MAX_HASHED_BYTES:
            parts.append(hashlib.sha256(target.read_bytes()).hexdigest())
        else:
            return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest() if parts else None
