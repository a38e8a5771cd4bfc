"""The Adapters tab and the Generate tab's adapter dropdown, driven as a person would: the real app served by
uvicorn, a real Chromium through Playwright, real PEFT LoRA adapters made on the tiny model.

Needs Debian's chromium at /usr/bin/chromium (never `playwright install`); skipped without it.
Screenshots land in /tmp/adapters-*.png for a person to look at.
"""
from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402

from studio.services.adapters import RegisterAdapterRequest  # noqa: E402
from tests.adapters_factory import make_archive, make_lora  # noqa: E402
from tests.conftest import registry_dict  # noqa: E402
from tests.live import BROWSER_TIMEOUT_MS, screenshot, serve, studio_page  # noqa: E402

TIMEOUT_MS = BROWSER_TIMEOUT_MS
TRAINING = {"training_config": {"method": "sft", "learning_rate": 0.0001, "epochs": 3.0, "batch_size": 2,
                                "gradient_checkpointing": True, "device": "cuda"},
            "training_metrics": {"loss": [2.5, 1.75, 1.25]}, "training_dataset": "piano-loops"}


@pytest.fixture
def studio(make_ctx, tiny_folder):
    """A served studio with Studio Tiny loaded and Tiny B in the registry, and two LoRA folders in the import root:
    lofi-piano (for studio-tiny, with a training record) and keys-for-b (for tiny-b)."""
    ctx = make_ctx(registry_dict(**{"tiny-b": {"display_name": "Tiny B", "max_duration_s": 12}}))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    imports = ctx.settings.data_dir / "imports"
    lofi = make_lora(tiny_folder, imports / "lofi-piano", base_name="studio-tiny")
    (lofi / "training_provenance.json").write_text(json.dumps(TRAINING))
    make_lora(tiny_folder, imports / "keys-for-b", base_name="tiny-b", seed=1)
    with serve(ctx) as base:
        yield ctx, base


@pytest.fixture
def page(studio, browser):
    with studio_page(browser, studio[1]) as pg:
        yield pg


def shot(page, name: str) -> None:
    screenshot(page, f"adapters-{name}")


def field(page, elem_id: str):
    return page.locator(f"#{elem_id}").locator("input, textarea").first


def table(page):
    return page.locator("#adapters-table")


def cell(page, text: str):
    """A list cell whose text is exactly `text` (a selected cell's accessible name also holds its buttons')."""
    return page.locator("[role=gridcell]").filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))


def row(page, name: str, version: int | None = None):
    """The list's rows (role=row) holding a cell with exactly `name` (and one with `version`)."""
    rows = table(page).get_by_role("row").filter(has=cell(page, name))
    if version is not None:
        rows = rows.filter(has=cell(page, str(version)))
    return rows


def open_row(page, name: str, version: int | None = None) -> None:
    row(page, name, version).first.locator("[role=gridcell]").nth(1).click()
    expect(page.locator("#adapter-detail-info")).to_contain_text(f"{name} v{version or ''}".rstrip())


def option_labels(page) -> list[str]:
    """The open dropdown's choices, as labelled (without the tick of the selected one)."""
    return [o.get_attribute("aria-label") for o in page.get_by_role("option").all()]


def register_folder(page, path: str, *, base: str | None = None, description: str = "") -> None:
    accordion = page.locator("#register-accordion")
    if not field(page, "register-path").is_visible():
        accordion.get_by_text("Register an adapter").click()
    field(page, "register-path").fill(path)
    if description:
        field(page, "register-description").fill(description)
    if base:
        field(page, "register-base").click()
        page.get_by_role("option", name=base, exact=True).click()
    page.locator("#register-btn").click()


def test_adapters_tab_register_filter_detail_rename_toggle_delete(studio, page, tmp_path):
    ctx, _ = studio
    page.get_by_role("tab", name="Adapters").click()
    expect(page.locator("#adapters-empty")).to_contain_text("No adapters registered yet")
    shot(page, "1-empty")

    # Register from a folder in the import root; the new adapter opens in the detail view.
    register_folder(page, "lofi-piano", description="Warm lo-fi piano")
    status = page.locator("#register-status")
    expect(status).to_contain_text("Registered lofi-piano v1", timeout=60_000)
    expect(row(page, "lofi-piano", 1)).to_have_count(1)
    detail = page.locator("#adapter-detail-info")
    expect(detail).to_contain_text("lofi-piano v1")
    expect(detail).to_contain_text("Warm lo-fi piano")
    expect(detail).to_contain_text("Studio Tiny")
    expect(detail).to_contain_text("up to 30 s")
    expect(detail).to_contain_text("Compatible with the loaded Studio Tiny")
    expect(detail).to_contain_text("0 generations")
    expect(detail).to_contain_text("folder:")

    # Its training configuration, grouped, with tooltips and readable numbers.
    config = page.locator("#adapter-config")
    for group in ("Model", "LoRA", "Training", "Hardware", "Checkpointing"):
        expect(config.locator(f"section[data-group='{group}']")).to_be_visible()
    expect(config.locator("section[data-group='DPO']")).to_have_count(0)
    lr = config.locator("tr[data-key='learning_rate']")
    expect(lr.locator("td")).to_have_text("1e-4")
    # the tooltip is the training configuration's own description (TrainingConfig's schema)
    expect(lr.locator("th")).to_have_attribute("title", re.compile(r"Step size of AdamW.*5e-5 to 5e-4"))
    expect(config.locator("tr[data-key='epochs'] td")).to_have_text("3")
    # a key the studio's configuration does not have: under Other, as written
    expect(config.locator("section[data-group='Other'] tr[data-key='gradient_checkpointing'] td")).to_have_text("Yes")
    expect(config.locator("tr[data-key='weight_decay'] td")).to_have_text("Not set")
    expect(config.locator("tr[data-key='r'] td")).to_have_text("4")
    history = page.locator("#adapter-history")
    expect(history).to_contain_text("v1 (shown)")
    expect(history).to_contain_text("1.25")  # final loss
    shot(page, "2-registered-detail")

    # An adapter for another model: the base model chosen in the form; the list says why it is not usable.
    register_folder(page, "keys-for-b", base="Tiny B")
    expect(status).to_contain_text("Registered keys-for-b v1", timeout=60_000)
    expect(row(page, "keys-for-b", 1)).to_contain_text("No: Requires Tiny B")
    expect(detail).to_contain_text("Not usable with the loaded Studio Tiny: Requires Tiny B")
    expect(page.locator("#adapter-config")).to_contain_text("No training configuration was recorded")

    # The same files again, as an uploaded archive: refused as identical to v1, unless asked for; then a second
    # version of lofi-piano, grouped with v1, both in the version history.
    archive = make_archive(ctx.settings.data_dir / "imports" / "lofi-piano", tmp_path / "lofi-piano.zip")
    page.locator("#register-source").get_by_label("Upload archive").check()
    page.locator("#register-file input[type=file]").set_input_files(str(archive))
    expect(page.locator("#register-file")).to_contain_text(re.compile(r"lofi-piano\s*\.zip"))  # uploaded
    page.locator("#register-btn").click()
    # refused: the reason in the status line under the button (styled as a refusal), no error badge over it
    expect(status).to_contain_text("Not registered. This adapter is identical to lofi-piano v1", timeout=60_000)
    expect(status).to_contain_text("Register even if identical")
    assert page.locator("#register-status .error").count() == 0
    shot(page, "3a-identical-refused")
    assert len(ctx.adapters.list()) == 2
    page.locator("#register-anyway input[type=checkbox]").check()
    page.locator("#register-btn").click()
    expect(status).to_contain_text("Registered lofi-piano v2", timeout=60_000)
    expect(detail).to_contain_text("upload:lofi-piano.zip")
    expect(history).to_contain_text("v1")
    expect(history).to_contain_text("v2 (shown)")
    names = [t.strip() for t in table(page).locator("[role=row]").all_inner_texts()[1:]]
    assert [n.split()[1:3] for n in names] == [["keys-for-b", "1"], ["lofi-piano", "1"], ["lofi-piano", "2"]], names
    shot(page, "3-versions")

    # Rename inline: Enter saves; the whole name is renamed (v1 and v2 move together, numbers kept).
    open_row(page, "lofi-piano", 1)
    name = field(page, "adapter-name-edit")
    expect(name).to_have_value("lofi-piano")
    name.fill("lofi-keys")
    name.press("Enter")
    expect(row(page, "lofi-keys", 1)).to_have_count(1)
    expect(row(page, "lofi-keys", 2)).to_have_count(1)
    expect(row(page, "lofi-piano")).to_have_count(0)
    expect(detail).to_contain_text("lofi-keys v1")
    assert ctx.adapters.list(active=True)[-1].name in ("lofi-keys", "lofi-piano")
    # Escape cancels: the saved name comes back.
    name.fill("not this one")
    name.press("Escape")
    expect(name).to_have_value("lofi-keys")
    assert "not this one" not in [a.name for a in ctx.adapters.list()]

    # Rename through the dialog opened from the list.
    page.locator("#adapter-rename-open").click()
    dialog = page.locator("#rename-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Rename lofi-keys")
    expect(dialog).to_contain_text("every version of it (deleted ones too) moves to the new name")
    expect(field(page, "rename-dialog-name")).to_have_value("lofi-keys")
    field(page, "rename-dialog-name").fill("lofi-piano-classic")
    shot(page, "4-rename-dialog")
    page.locator("#rename-dialog-save").click()
    expect(dialog).to_be_hidden()
    expect(row(page, "lofi-piano-classic", 1)).to_have_count(1)
    expect(row(page, "lofi-piano-classic", 2)).to_have_count(1)
    expect(field(page, "adapter-name-edit")).to_have_value("lofi-piano-classic")
    # ... and Cancel leaves it as it was.
    page.locator("#adapter-rename-open").click()
    field(page, "rename-dialog-name").fill("never saved")
    page.locator("#rename-dialog-cancel").click()
    expect(dialog).to_be_hidden()
    expect(row(page, "lofi-piano-classic", 1)).to_have_count(1)

    # Activation toggle: deactivate; the list says so.
    active = page.locator("#adapter-active input[type=checkbox]")
    expect(active).to_be_checked()
    active.uncheck()
    expect(row(page, "lofi-piano-classic", 1)).to_contain_text("No")
    expect(detail).to_contain_text("Inactive")
    assert not next(a for a in ctx.adapters.list() if a.name == "lofi-piano-classic").active

    # "Active only" hides it, and the filter survives a reload.
    only = page.locator("#adapters-active-only input[type=checkbox]")
    only.check()
    expect(row(page, "lofi-piano-classic", 1)).to_have_count(0)
    expect(row(page, "keys-for-b")).to_have_count(1)
    shot(page, "5-active-only")
    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("tab", name="Adapters").click()
    expect(only).to_be_checked()
    page.reload()
    expect(page.locator("#current-model")).to_contain_text("Studio Tiny")
    page.get_by_role("tab", name="Adapters").click()
    expect(only).to_be_checked()
    expect(row(page, "keys-for-b")).to_have_count(1)
    expect(row(page, "lofi-piano-classic", 1)).to_have_count(0)
    only.uncheck()
    expect(row(page, "lofi-piano-classic")).to_have_count(2)

    # Reactivate from the detail view.
    open_row(page, "lofi-piano-classic", 1)
    page.locator("#adapter-active input[type=checkbox]").check()
    expect(row(page, "lofi-piano-classic", 1)).not_to_contain_text("No")

    # Delete, after confirming.
    open_row(page, "lofi-piano-classic", 2)
    page.locator("#adapter-delete").click()
    confirm = page.locator("#delete-confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("Delete lofi-piano-classic v2? It will be hidden and refused for new "
                                     "generations; past jobs keep it. Deleted adapters (below) can restore it.")
    shot(page, "6-delete-confirm")
    page.locator("#adapter-delete-cancel").click()  # first changing our mind
    expect(confirm).to_be_hidden()
    expect(row(page, "lofi-piano-classic", 2)).to_have_count(1)
    page.locator("#adapter-delete").click()
    page.locator("#adapter-delete-confirm").click()
    expect(row(page, "lofi-piano-classic", 2)).to_have_count(0)
    expect(page.locator("#adapter-detail")).to_be_hidden()
    assert [a.label for a in ctx.adapters.list()] == ["keys-for-b v1", "lofi-piano-classic v1"]
    shot(page, "7-after-delete")

    # ... and restore it from the deleted adapters.
    page.locator("#deleted-accordion").get_by_text("Deleted adapters").click()
    choice = field(page, "deleted-choice")
    expect(choice).to_have_value(re.compile(r"^lofi-piano-classic v2 \(deleted "))
    page.locator("#adapter-restore").click()
    expect(page.locator(".toast-body", has_text="Restored lofi-piano-classic v2").first).to_be_visible()
    expect(row(page, "lofi-piano-classic", 2)).to_have_count(1)
    assert ctx.adapters.get(next(a.id for a in ctx.adapters.list() if a.version == 2)).active
    shot(page, "7b-restored")

    # User text in notifications is text: a name written as HTML shows as written, and loads nothing.
    # (Restoring opened v2 already: clicking its row again would send a select whose answer can land after the
    # typing below on a busy machine, putting the saved name back before Enter.)
    hostile = '<img src="https://example.com/x.png">'
    expect(page.locator("#adapter-detail-info")).to_contain_text("lofi-piano-classic v2")
    name = field(page, "adapter-name-edit")
    expect(name).to_have_value("lofi-piano-classic")  # the opened row's name is in: type over it (as a person)
    name.fill(hostile)
    name.press("Enter")
    toast = page.locator(".toast-body", has_text="Renamed lofi-piano-classic to")
    expect(toast.first).to_contain_text(hostile)
    expect(page.locator(".toast-body img")).to_have_count(0)
    shot(page, "7c-escaped-notification")
    expect(name).to_have_value(hostile)
    name.fill("lofi-piano")
    name.press("Enter")
    expect(row(page, "lofi-piano", 1)).to_have_count(1)


def test_generate_with_adapter_and_incompatible_choice(studio, page):
    ctx, _ = studio
    lofi = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="lofi-piano"))
    ctx.adapters.register(RegisterAdapterRequest(source="folder", path="keys-for-b", base_model="tiny-b"))
    page.reload()  # (the page's 2 s refresh would also pick them up)
    expect(page.locator("#current-model")).to_contain_text("Studio Tiny")

    # The dropdown: the compatible adapter, and the one for Tiny B greyed with the model it needs.
    hint = page.locator("#adapter-hint")
    expect(hint).to_contain_text("Some adapters need another model: change it in Settings.")
    page.locator("#adapter input").click()
    expect(page.get_by_role("option")).to_have_count(3)
    assert option_labels(page) == ["None (base model)", "lofi-piano v1", "keys-for-b v1 — Requires Tiny B"]
    greyed = page.get_by_role("option", name="keys-for-b v1 — Requires Tiny B")
    assert float(greyed.evaluate("e => getComputedStyle(e).opacity")) < 0.6
    shot(page, "8-dropdown")
    page.get_by_role("option", name="lofi-piano v1").click()
    expect(page.locator("#adapter input")).to_have_value("lofi-piano v1")

    # Generate with it: the result names the adapter; the Adapters tab counts the use.
    page.locator("#prompt textarea").fill("warm lo-fi piano with vinyl crackle")
    number = page.locator("#duration input[type=number]")
    number.fill("0.5")
    number.press("Enter")
    page.locator("#generate-btn").click()
    result = page.locator("#result-info")
    expect(result).to_contain_text("adapter lofi-piano v1", timeout=60_000)
    expect(result).to_contain_text("Studio Tiny")
    assert ctx.adapters.get(lofi.id).usage_count == 1
    page.wait_for_timeout(500)
    shot(page, "9-generated-with-adapter")
    page.get_by_role("tab", name="Adapters").click()
    expect(row(page, "lofi-piano", 1)).to_contain_text("Yes", timeout=10_000)
    expect(row(page, "lofi-piano", 1).get_by_role("gridcell").last).to_have_text("1", timeout=10_000)

    # The greyed choice is still reachable by keyboard: the server refuses it, saying which model it needs.
    page.get_by_role("tab", name="Generate").click()
    box = page.locator("#adapter input")
    box.click()
    box.fill("keys")  # filter the choices, then pick the one left with the keyboard
    box.press("ArrowDown")
    box.press("Enter")
    expect(box).to_have_value("keys-for-b v1 — Requires Tiny B")
    page.locator("#generate-btn").click()
    refused = page.locator("#result-info")  # the refusal in the result line, no error badge over the audio
    expect(refused).to_contain_text("Not generated.", timeout=30_000)
    expect(refused).to_contain_text("cannot be used with Studio Tiny")
    expect(refused).to_contain_text("Tiny B")
    assert page.locator("#audio-out .error, #result-info .error").count() == 0
    shot(page, "10-incompatible-refused")

    # Switching to Tiny B turns the dropdown round: keys-for-b usable, lofi-piano needs Studio Tiny.
    page.get_by_role("tab", name="Settings").click()
    page.locator("#model-dropdown input").click()
    page.get_by_role("option", name=re.compile(r"^Tiny B")).click()
    expect(page.locator("#switch-status")).to_contain_text("Tiny B is ready", timeout=60_000)
    page.get_by_role("tab", name="Generate").click()
    expect(page.locator("#current-model")).to_contain_text("Model: Tiny B")
    page.locator("#adapter input").click()
    expect(page.get_by_role("option")).to_have_count(3)
    assert option_labels(page) == ["None (base model)", "keys-for-b v1", "lofi-piano v1 — Requires Studio Tiny"]
    page.keyboard.press("Escape")
    shot(page, "11-switched-dropdown")
