"""The Training tab's runs part as plain functions: the form (built from TrainingConfig's schema, its values turned
into a request, wrong fields named), the runs list, the charts' data, the run's summary, the audition grid, the
registration choices, the run link; and the queue panel's training line."""
from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr
import pytest

from studio.services.queue import QueueView
from studio.services.training import (DEVICE_POLICY, AuditionClip, CheckpointInfo, LossPoint, RunInfo,
                                      RunSummary)
from studio.training.config import GROUPS, TrainingConfig
from studio.ui import training_tab as tt
from studio.ui.queue_panel import queue_markdown

NOW = datetime(2026, 12, 7, 0, 30, tzinfo=timezone.utc)


def specs_and_defaults():
    specs = [f for group in tt.grouped_specs().values() for f in group]
    defaults = TrainingConfig().model_dump()
    return specs, [defaults[f.name] for f in specs]


def test_the_form_has_every_field_in_its_schema_group():
    groups = tt.grouped_specs()
    assert list(groups) == list(GROUPS)
    names = [f.name for g in groups.values() for f in g]
    assert sorted(names) == sorted(TrainingConfig.model_fields)
    assert [f.name for f in groups["DPO"]] == ["dpo_beta", "dpo_reference"]
    assert {f.name: f.kind for f in groups["LoRA"]}["target_modules"] == "dropdown"


def test_form_values_become_the_configuration():
    specs, values = specs_and_defaults()
    values[[f.name for f in specs].index("r")] = 8.0  # number boxes hand back floats
    config = tt.config_values(specs, values)
    assert config["r"] == 8 and isinstance(config["r"], int)
    assert TrainingConfig.model_validate(config).r == 8


@pytest.mark.parametrize("field, value, says", [
    ("learning_rate", 0.5, "Learning rate: Input should be less than or equal to 0.01"),
    ("r", 2.5, "Rank (r): Input should be a valid integer"),
    ("max_steps", None, "Steps: enter a value"),
    ("target_modules", "everything", "Target modules: Input should be"),
])
def test_a_wrong_field_is_named_by_its_label(field, value, says):
    specs, values = specs_and_defaults()
    values[[f.name for f in specs].index(field)] = value
    with pytest.raises(gr.Error) as err:
        tt.config_values(specs, values)
    assert says in err.value.message


def test_the_request_for_each_method():
    config = TrainingConfig(max_steps=20).model_dump()
    req = tt.run_request("sft", "  tones ", "3", "9", tt.NONE, "warm piano\n\n  calm pad \n", True, config,
                         " tones, 8 clips ")
    assert (req.method, req.name, req.dataset_id, req.abtest_id, req.start_adapter_id) == ("sft", "tones", 3, None,
                                                                                         None)
    assert req.audition_prompts == ["warm piano", "calm pad"] and req.config["max_steps"] == 20
    assert req.description == "tones, 8 clips"
    req = tt.run_request("dpo", "", "3", "9", "4", "", False, config)
    assert (req.name, req.dataset_id, req.abtest_id, req.start_adapter_id, req.audition_prompts,
            req.auto_register) == (None, None, 9, 4, None, False)
    with pytest.raises(gr.Error, match="Choose the dataset"):
        tt.run_request("sft", "", None, "9", tt.NONE, "", True, config)
    with pytest.raises(gr.Error, match="closed A/B test"):
        tt.run_request("dpo", "", "3", None, tt.NONE, "", True, config)
    with pytest.raises(gr.Error, match="name"):
        tt.run_request("sft", "x" * 101, "3", None, tt.NONE, "", True, config)


def summary(**kw) -> dict:
    base = dict(id=7, name="tones <b>", method="sft", model_id="studio-tiny", status="running", step=40,
                total_steps=200, loss=2.345678, eta_s=120.0, dataset_id=2, dataset_name="tones", dataset_version=3,
                abtest_id=None, adapter_id=None, adapter_label=None, created_by="local", created_at=NOW,
                finished_at=None, url="/?run=7")
    return {**base, **kw}


def clip(prompt, seed, status="succeeded", job=1, score=None):
    return AuditionClip(prompt=prompt, seed=seed, job_id=job, status=status,
                        audio_url=f"/api/jobs/{job}/audio" if status == "succeeded" else None, score=score)


def run_info(**kw) -> RunInfo:
    checkpoints = kw.pop("checkpoints", [
        CheckpointInfo(step=0, loss=None, created_at=None, resumable=False, adapter_id=None, adapter_label=None,
                       auditions=[clip("warm piano", 11, job=1, score=0.21), clip("calm <pad>", 12, job=2)],
                       mean_score=0.21),
        CheckpointInfo(step=20, loss=2.5, created_at=NOW, resumable=True, adapter_id=5, adapter_label="tones v2",
                       auditions=[clip("warm piano", 11, job=3), clip("calm <pad>", 12, status="waiting", job=None)],
                       mean_score=None),
        CheckpointInfo(step=40, loss=2.1, created_at=NOW, resumable=True, adapter_id=None, adapter_label=None,
                       auditions=[clip("warm piano", 11, status="queued", job=5)], mean_score=None)])
    curve = kw.pop("loss_curve", [LossPoint(step=s, loss=3 - s / 40, lr=1e-4 * min(1, s / 20))
                                  for s in range(1, 41)])
    base = dict(summary(**kw.pop("summary", {})), config=TrainingConfig().model_dump(), dataset_hash="ab" * 32,
                start_adapter_id=None, base_model_revision=None, error=None, error_code=None,
                device_policy=DEVICE_POLICY, audition_prompts=["warm piano", "calm <pad>"], audition_seeds=[11, 12],
                checkpoints=checkpoints, loss_curve=curve, log_tail=None)
    return RunInfo(**{**base, **kw})


def test_the_runs_list():
    runs = [RunSummary(**summary()), RunSummary(**summary(id=8, method="dpo", abtest_id=4, status="succeeded",
                                                          dataset_id=None, dataset_name=None,
                                                          adapter_label="tones v4", loss=None))]
    frame = tt.list_frame(runs)
    assert frame.columns.tolist() == tt.LIST_HEADERS
    assert frame.values.tolist() == [
        [7, "tones <b>", "sft", "running", "40 of 200", "2.346", "about 2 min", "tones v3", ""],
        [8, "tones <b>", "dpo", "succeeded", "40 of 200", "—", "", "A/B test #4", "tones v4"]]
    assert tt.run_choices(runs)[0] == ("#7 tones <b> · running", 7)


def test_chart_frames_follow_the_curve_and_stay_light():
    loss, lr, acc = tt.curve_frames(run_info().loss_curve)
    assert loss["step"].tolist() == list(range(1, 41)) and loss["loss"].iloc[0] == pytest.approx(3 - 1 / 40)
    assert lr["lr"].iloc[-1] == pytest.approx(1.0) and acc.empty  # in units of 1e-4: short axis labels
    long = [LossPoint(step=s, loss=1.0, lr=1e-4) for s in range(1, 5001)]
    thin = tt.thin(long)
    assert len(thin) <= tt.MAX_CHART_POINTS and thin[0].step == 1 and thin[-1].step == 5000
    for frame in (*tt.curve_frames([]), loss, lr):  # numeric axes from the first (empty) frame on
        assert frame["step"].dtype.kind == "i" and frame.iloc[:, 1].dtype.kind == "f"
    dpo = [LossPoint(step=s, loss=0.7, lr=1e-4, accuracy=0.5) for s in (1, 2)]
    assert tt.curve_frames(dpo)[2]["accuracy"].tolist() == [0.5, 0.5]


def test_summary_says_where_the_run_stands_and_escapes_names():
    text = tt.summary_markdown(run_info())
    assert "#7 tones \\<b\\>" in text
    assert "step **40** of 200 (20%)" in text and "loss 2.346" in text and "2 min to go" in text
    assert "tones v3" in text and "`abababababab`" in text
    failed = tt.summary_markdown(run_info(summary=dict(status="failed"), error="Out of memory <now>",
                                          error_code="out_of_memory"))
    assert "❌ Failed" in failed and "`out\\_of\\_memory`" in failed and "Out of memory \\<now\\>" in failed
    assert "to go" not in failed


def test_audition_grid_has_the_start_first_and_a_column_per_prompt_and_seed():
    html = tt.checkpoints_html(run_info())
    assert html.index("data-step='0'") < html.index("data-step='20'") < html.index("data-step='40'")
    assert html.count("<audio") == 3  # the ready clips; the others say what they wait for
    assert "src='/api/jobs/1/audio'" in html and "src='/api/jobs/3/audio'" in html
    assert "calm &lt;pad&gt;" in html and "<pad>" not in html
    assert "aria-label='warm piano (seed 11) at step 20'" in html
    assert "seed 11" in html and "seed 12" in html
    assert "waiting (for the run&#x27;s base model" in html and ">queued<" in html
    assert "score 0.210" in html and "registered as tones v2" in html
    assert "No checkpoint yet" in tt.checkpoints_html(run_info(checkpoints=[]))


def test_register_choices_and_what_was_registered():
    run = run_info()
    assert tt.register_choices(run) == [("step 40 · loss 2.1", 40),
                                        ("step 20 · loss 2.5 · registered as tones v2", 20)]
    assert "**tones v2** from step 20" in tt.registered_markdown(run)
    none = run_info(checkpoints=[])
    assert "registered when the run finishes" in tt.registered_markdown(none)


def test_run_updates_enable_what_the_status_allows():
    def buttons(status):
        out, _ = tt.run_updates(run_info(summary=dict(status=status), log_tail="Traceback: boom"))
        return out[4].interactive, out[5].interactive, out[9].visible
    assert buttons("running") == (True, False, False)
    assert buttons("stopped") == (False, True, False)
    assert buttons("interrupted") == (False, True, False)
    assert buttons("failed") == (False, True, True)  # the log's last lines show
    assert buttons("succeeded") == (False, False, False)
    assert tt.run_updates(run_info())[0][3].visible is False  # the accuracy chart: DPO runs only
    assert tt.run_updates(run_info(summary=dict(method="dpo", abtest_id=3)))[0][3].visible is True


def test_a_tick_changes_only_what_changed():
    """A step of the run redraws the summary and the charts, never the audition players (someone may be listening)
    nor the checkpoint chosen for registration."""
    skip = gr.skip()
    run = run_info()
    first, parts = tt.run_updates(run, reg_value=20)
    assert first[7].value == 20  # the person's choice stays while it exists
    again, _ = tt.run_updates(run, reg_value=20, before=parts)
    assert all(isinstance(u, type(skip)) for u in again)
    later = run_info(summary=dict(step=41), loss_curve=[*run.loss_curve, LossPoint(step=41, loss=1.9, lr=1e-4)])
    out, _ = tt.run_updates(later, reg_value=20, before=parts)
    changed = [i for i, u in enumerate(out) if not isinstance(u, type(skip))]
    assert changed == [0, 1, 2, 3]  # summary, loss, learning-rate and accuracy charts


@pytest.mark.parametrize("params, run_id", [({"run": "12"}, 12), ({"run": "x"}, None), ({"run": "0"}, None),
                                            ({}, None), (None, None)])
def test_run_link(params, run_id):
    assert tt.run_id_from(params) == run_id


def test_queue_panel_says_what_trains_beside_generation():
    view = QueueView(items=[], waiting=0, max_queue=8, next="Nothing to do.")
    assert "Training" not in queue_markdown(view, lambda m: m)
    view = view.model_copy(update={"training": "Training tones_x (run 7): step 40 of 200; beside generation"})
    assert "**Training:** Training tones\\_x \\(run 7\\)" in queue_markdown(view, lambda m: m)
