"""The Generate tab's melody input: shown only while the model the next job runs on follows melodies (MusicGen
Melody: `conditioning: [text, melody]` in the registry), hidden and emptied otherwise.

A clip uploaded or recorded here becomes an audio upload (the studio's one way audio comes in: the same record and
checks as POST /api/uploads) as soon as it arrives, so a bad file is said at once, under the player; Generate then
sends its id (melody_upload_id), and the service reads it from its start, at most one window long."""
from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from studio.context import AppContext
from studio.errors import InvalidRequest, StudioError
from studio.services.models import ModelInfo
from studio.ui.common import md_escape, page_user

MAX_KEPT = 256  # clips remembered per page build (path -> upload id): one upload per clip, not one per Generate


def follows_melody(model: ModelInfo | None) -> bool:
    return model is not None and "melody" in model.conditioning


def melody_hint(model: ModelInfo | None) -> str:
    if not follows_melody(model):
        return ""
    return (f"{md_escape(model.display_name)} follows a melody: upload or record one (wav, flac, ogg or mp3) and "
            f"the music follows its notes (the first {model.max_duration_s:g} s). Optional.")


@dataclass
class MelodyInput:
    audio: gr.Audio
    hint: gr.Markdown
    # Gradio keeps an uploaded file under a folder named by its content's hash: the same path is the same clip
    _kept: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def widgets(self) -> list:
        """What follows the model the next job runs on (model_updates in generate_tab.py)."""
        return [self.audio, self.hint]

    def upload_id(self, ctx: AppContext, path: str | None, user: str) -> str | None:
        """The audio upload of the clip in the player (kept now if it is new); None without a clip. A file the
        studio does not take raises its StudioError (unsupported_audio, audio_too_long, ...)."""
        if not path:
            return None
        with self._lock:
            known = self._kept.get(path)
        if known is not None:
            try:
                ctx.uploads.get(known)
                return known
            except StudioError:  # removed since: kept again below
                pass
        source = _uploaded_file(ctx, path)
        with ctx.uploads.incoming() as staged:
            shutil.copyfile(source, staged)
            upload_id = ctx.uploads.save(staged, source.name, user).id
        with self._lock:
            if len(self._kept) >= MAX_KEPT:
                self._kept.pop(next(iter(self._kept)))
            self._kept[path] = upload_id
        return upload_id


def melody_text(melody) -> str:
    """What a job's melody record says: '2 s of upload `ab12…`, cut from 40 s'."""
    cut = f", cut from {melody.trimmed_from_s:g} s" if melody.trimmed_from_s else ""
    return f"{melody.seconds:g} s of upload `{md_escape(melody.upload_id)}`{cut}"


def melody_line(melody) -> str:
    """The result line's note of the melody a job followed ('' without one)."""
    return f"  \n🎵 Followed a melody: {melody_text(melody)}" if melody is not None else ""


def melody_updates(model: ModelInfo | None) -> list:
    """[audio, hint] (MelodyInput.widgets) for the model the next job runs on: shown for a melody model (the clip
    kept), hidden and emptied for any other (a melody it cannot take is never sent unseen)."""
    if follows_melody(model):
        return [gr.update(visible=True), gr.update(value=melody_hint(model), visible=True)]
    return [gr.update(visible=False, value=None), gr.update(value="", visible=False)]


def _uploaded_file(ctx: AppContext, path: str) -> Path:
    """The player's file, which must be a regular file in the studio's Gradio upload folder (the request guard
    checks this too; a handler never reads another path)."""
    from studio.server import gradio_temp_dir  # the server builds the page: imported when a clip arrives

    root = gradio_temp_dir(ctx)
    try:
        real = Path(os.path.realpath(path))
        ok = real.is_relative_to(root) and real.is_file()
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise InvalidRequest("The melody must be uploaded or recorded in this page.", code="file_not_uploaded")
    return real


def build_melody_input(model: ModelInfo | None) -> MelodyInput:
    shown = follows_melody(model)
    audio = gr.Audio(label="Melody (optional)", sources=["upload", "microphone"], type="filepath",
                     elem_id="melody", visible=shown)
    hint = gr.Markdown(melody_hint(model), elem_id="melody-hint", visible=shown)
    return MelodyInput(audio, hint)


def wire_melody_input(ctx: AppContext, melody: MelodyInput, next_model) -> None:
    def arrived(path, request: gr.Request):
        """Keep the clip as an upload now and say what will be followed (or why the file is refused)."""
        model = next_model(ctx)
        if not path:
            return melody_hint(model)
        try:
            upload_id = melody.upload_id(ctx, path, page_user(request))
        except StudioError as exc:
            return f"❌ {md_escape(exc.message)}"
        info = ctx.uploads.get(upload_id)
        most = model.max_duration_s if model else info.seconds
        cut = f" (its first {most:g} s)" if info.seconds > most else ""
        return f"🎵 The music will follow **{md_escape(info.filename)}**, {info.seconds:.1f} s{cut}."

    melody.audio.change(arrived, melody.audio, melody.hint, show_progress="minimal", api_visibility="private")
