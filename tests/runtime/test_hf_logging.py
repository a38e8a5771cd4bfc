"""Only MusicGen's own token layout (special ids one past the codebook) is silenced in transformers' logging."""
from __future__ import annotations

import logging

import pytest

from studio.runtime.hf_logging import EMITTING_LOGGERS, MusicgenTokenLayoutFilter, quiet_musicgen_token_layout

TEMPLATE = ("Model config: {name} must be `None` or an integer within the vocabulary (between 0 and {top}), "
            "got {value}. This may result in unexpected behavior.")


@pytest.mark.parametrize("name,top,value,shown", [
    ("pad_token_id", 2047, 2048, False),  # MusicGen's layout: the id right after the codebook
    ("bos_token_id", 2047, 2048, False),
    ("decoder_start_token_id", 2047, 2048, False),
    ("pad_token_id", 2047, 4096, True),  # a broken config is still reported
    ("pad_token_id", 31999, -1, True),
])
def test_the_filter_drops_exactly_the_musicgen_layout(name, top, value, shown):
    record = logging.LogRecord("transformers.configuration_utils", logging.WARNING, __file__, 1,
                               TEMPLATE.format(name=name, top=top, value=value), None, None)
    assert MusicgenTokenLayoutFilter().filter(record) is shown


def test_unrelated_messages_pass():
    record = logging.LogRecord("transformers.configuration_utils", logging.WARNING, __file__, 1, "other", None, None)
    assert MusicgenTokenLayoutFilter().filter(record)


def test_the_filter_sits_on_the_loggers_that_emit_the_message_once():
    quiet_musicgen_token_layout()
    quiet_musicgen_token_layout()
    for name in EMITTING_LOGGERS:
        assert sum(isinstance(f, MusicgenTokenLayoutFilter) for f in logging.getLogger(name).filters) == 1


def test_transformers_still_emits_it_from_a_logger_named_here():
    """If transformers moves the warning to another module, this fails (and the filter must follow it)."""
    import transformers.configuration_utils as cu
    import transformers.models.musicgen.configuration_musicgen as mc

    assert cu.logger.name in EMITTING_LOGGERS and mc.logger.name in EMITTING_LOGGERS
    assert "within the vocabulary" in open(cu.__file__).read()
