"""The Generate tab's melody input (studio/ui/melody_input.py): there only for models that follow melodies; a clip
becomes one audio upload (however many Generates use it); only files in the studio's own Gradio folder are read."""
from __future__ import annotations

import pytest

from studio.errors import InvalidRequest
from studio.server import gradio_temp_dir
from studio.ui.melody_input import MelodyInput, follows_melody, melody_hint, melody_updates
from tests.melody_support import melody_ctx, write_tune


@pytest.fixture(scope="module")
def studio(make_module_ctx):
    return melody_ctx(make_module_ctx)


def test_shown_only_for_models_that_follow_melodies(studio):
    melody, text = studio.models.get("studio-tiny-melody"), studio.models.get("studio-tiny")
    assert melody.conditioning == ["text", "melody"] and text.conditioning == ["text"]
    assert follows_melody(melody) and not follows_melody(text) and not follows_melody(None)
    shown, hint = melody_updates(melody)
    assert shown["visible"] is True and "value" not in shown  # the person's clip stays
    assert hint["visible"] is True and "first 30 s" in hint["value"]
    for model in (text, None):
        hidden, hint = melody_updates(model)
        assert hidden["visible"] is False and hidden["value"] is None  # emptied: never sent unseen
        assert hint["visible"] is False and melody_hint(model) == ""


def test_the_tab_builds_the_input_for_the_loaded_model(studio):
    from studio.ui.app import build_ui

    for model_id, visible in (("studio-tiny-melody", True), ("studio-tiny", False)):
        assert studio.manager.switch_and_wait(model_id).stage == "ready"
        comps = {c.elem_id: c for c in build_ui(studio).blocks.values() if getattr(c, "elem_id", None)}
        assert comps["melody"].visible is visible and comps["melody-hint"].visible is visible


def test_a_clip_is_kept_once_and_only_from_the_studios_upload_folder(studio, tmp_path):
    melody = MelodyInput(audio=None, hint=None)
    outside = write_tune(tmp_path / "tune.wav", [440.0, 392.0])
    with pytest.raises(InvalidRequest) as err:
        melody.upload_id(studio, str(outside), "local")
    assert err.value.code == "file_not_uploaded"
    for sneaky in ("/etc/passwd", str(studio.settings.data_dir / "studio.db"), "", None):
        if sneaky:
            with pytest.raises(InvalidRequest):
                melody.upload_id(studio, sneaky, "local")
        else:
            assert melody.upload_id(studio, sneaky, "local") is None
    folder = gradio_temp_dir(studio) / "0123abcd"
    folder.mkdir(parents=True, exist_ok=True)
    inside = write_tune(folder / "tune.wav", [440.0, 392.0])
    first = melody.upload_id(studio, str(inside), "alice")
    assert melody.upload_id(studio, str(inside), "alice") == first  # the same clip: the same upload
    info = studio.uploads.get(first)
    assert info.filename == "tune.wav" and info.uploaded_by == "alice" and info.seconds == pytest.approx(1.0)
    (folder / "link.wav").symlink_to(outside)  # a link out of the folder is refused too
    with pytest.raises(InvalidRequest):
        melody.upload_id(studio, str(folder / "link.wav"), "alice")
    bad = folder / "bad.wav"
    bad.write_bytes(b"RIFF nothing")
    with pytest.raises(Exception) as err:
        melody.upload_id(studio, str(bad), "alice")
    assert getattr(err.value, "code", None) == "unsupported_audio"


def test_history_and_the_result_line_say_which_melody_was_followed(studio, tmp_path):
    from studio.services.generation import GenerateRequest
    from studio.ui.generate_tab import result_summary
    from studio.ui.history_tab import detail_markdown
    from tests.melody_support import upload

    assert studio.manager.switch_and_wait("studio-tiny-melody").stage == "ready"
    melody_id = upload(studio, write_tune(tmp_path / "hum.wav", [440.0, 392.0]))
    r = studio.generation.generate(GenerateRequest(prompt="pop", duration_s=0.5, melody_upload_id=melody_id))
    assert f"Followed a melody: 1 s of upload `{melody_id}`" in result_summary(r, "Studio Tiny Melody")
    detail = detail_markdown(studio, studio.jobs.get(r.job_id))
    assert f"| Melody | 1 s of upload `{melody_id}` ([listen](/api/uploads/{melody_id}/audio)) |" in detail
