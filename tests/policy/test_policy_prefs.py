"""Where each preference comes from (issue 9 item 10): an administrator's
choice wins over the file per preference, even when it equals the default."""

from __future__ import annotations

import pytest

from sentry.model import Preferences, RefusalStyle
from sentry.policy import PutPreferences, Snapshot, ValidationError
from sentry.policy.prefs import (
    PREFERENCE_NAMES,
    Source,
    effective,
    file_preferences,
    sources,
    update_preferences,
)
from sentry.settings import settings_from_mapping

FILE = {"refusal_style": "http403", "max_devices_per_mailbox": 5, "new_device_access": "block"}


def file_prefs(values: dict[str, object] = FILE) -> tuple[Preferences, frozenset[str]]:
    return file_preferences(settings_from_mapping({"preferences": values}).preferences)


def test_the_file_gives_its_keys_under_the_model_names():
    prefs, given = file_prefs()
    assert given == {
        "refusal_style",
        "max_devices_per_mailbox",
        "new_device_access_when_registry_unreachable",
    }
    assert prefs.refusal_style is RefusalStyle.HTTP403 and prefs.admin_set == frozenset()
    assert file_prefs({})[1] == frozenset()


def apply(snapshot: Snapshot, **values: object) -> Preferences:
    file, _ = file_prefs()
    changes = update_preferences(snapshot, values, file=file, actor="admin", now=1.0)
    snapshot.apply(changes)
    return snapshot.prefs


def test_an_admin_value_equal_to_the_default_still_wins_over_the_file():
    file, given = file_prefs()
    snapshot = Snapshot.build(prefs=effective(Preferences(), file))
    assert snapshot.prefs.max_devices_per_mailbox == 5
    stored = apply(snapshot, max_devices_per_mailbox=None)  # the built-in default
    assert stored.admin_set == {"max_devices_per_mailbox"}
    # A restart: the admin's None stays, the file's refusal_style still applies.
    restarted = effective(stored, file)
    assert restarted.max_devices_per_mailbox is None
    assert restarted.refusal_style is RefusalStyle.HTTP403
    assert sources(restarted, given) == {
        **dict.fromkeys(PREFERENCE_NAMES, Source.DEFAULT),
        "max_devices_per_mailbox": Source.ADMIN,
        "refusal_style": Source.FILE,
        "new_device_access_when_registry_unreachable": Source.FILE,
    }
    # The file changes what the admin did not set, and only that.
    changed_file, _ = file_prefs({**FILE, "refusal_style": "status", "max_devices_per_mailbox": 9})
    again = effective(restarted, changed_file)
    assert again.refusal_style is RefusalStyle.STATUS and again.max_devices_per_mailbox is None


def test_setting_the_value_that_already_applies_records_the_admins_choice():
    file, _ = file_prefs()
    snapshot = Snapshot.build(prefs=effective(Preferences(), file))
    changes = update_preferences(
        snapshot, {"refusal_style": "http403"}, file=file, actor="a", now=1.0
    )
    assert any(isinstance(c, PutPreferences) for c in changes)  # audited, not a no-op
    snapshot.apply(changes)
    assert snapshot.prefs.admin_set == {"refusal_style"}


def test_use_file_hands_a_preference_back():
    file, given = file_prefs()
    snapshot = Snapshot.build(prefs=effective(Preferences(), file))
    apply(snapshot, refusal_style="status", auto_block_unregistered=True)
    changes = update_preferences(
        snapshot, {}, file=file, use_file=["refusal_style"], actor="a", now=2.0
    )
    snapshot.apply(changes)
    prefs = snapshot.prefs
    assert prefs.refusal_style is RefusalStyle.HTTP403  # the file's value, at once
    assert prefs.admin_set == {"auto_block_unregistered"}
    assert sources(prefs, given)["refusal_style"] is Source.FILE


def test_bad_updates_are_refused_whole():
    file, _ = file_prefs()
    snapshot = Snapshot.build()
    with pytest.raises(ValidationError, match="unknown preferences: nope"):
        update_preferences(snapshot, {"nope": 1}, file=file, actor="a", now=1.0)
    with pytest.raises(ValidationError, match="at once: refusal_style"):
        update_preferences(
            snapshot,
            {"refusal_style": "status"},
            file=file,
            use_file=["refusal_style"],
            actor="a",
            now=1.0,
        )
    with pytest.raises(ValidationError):
        update_preferences(snapshot, {"max_devices_per_mailbox": 0}, file=file, actor="a", now=1.0)
    assert snapshot.prefs == Preferences()
