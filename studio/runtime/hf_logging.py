"""Silence exactly one known-harmless transformers message: MusicGen's special token ids sit one past its codebook.

MusicGen's pad / bos / decoder-start id is 2048 for a 2048-entry codebook (its embedding has vocab_size + 1 rows),
and transformers 5.23 warns "pad_token_id must be `None` or an integer within the vocabulary (between 0 and 2047),
got 2048" three times per process. Those records are created on transformers' *child* loggers (configuration_utils
and the MusicGen configuration modules): a filter on the parent "transformers" logger never sees them, so the
filter goes on each logger that emits them. Any other out-of-vocabulary id (a broken config) is still reported.
"""
from __future__ import annotations

import logging
import re

EMITTING_LOGGERS = ("transformers.configuration_utils",
                    "transformers.models.musicgen.configuration_musicgen",
                    "transformers.models.musicgen_melody.configuration_musicgen_melody")
_MESSAGE = re.compile(r"(\w+_token_id) must be `None` or an integer within the vocabulary "
                      r"\(between 0 and (\d+)\), got (\d+)")


class MusicgenTokenLayoutFilter(logging.Filter):
    """Drops the warning when the id is exactly one past the vocabulary (MusicGen's layout), keeps every other."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _MESSAGE.search(record.getMessage())
        return not (match and int(match.group(3)) == int(match.group(2)) + 1)


def quiet_musicgen_token_layout() -> None:
    """Install the filter on the loggers that emit the message (idempotent)."""
    for name in EMITTING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MusicgenTokenLayoutFilter) for f in logger.filters):
            logger.addFilter(MusicgenTokenLayoutFilter())
