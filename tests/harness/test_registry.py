import pytest

from harness.registry import Registry, unknown_name_message


def test_lazy_target_is_imported_on_first_get():
    reg = Registry("thing")
    reg.add("join", "os.path:join")
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.origin("join") == "os.path:join"


def test_unknown_name_suggests_close_matches():
    reg = Registry("shift")
    reg.add("imagenet-r", "os:sep")
    with pytest.raises(KeyError) as info:
        reg.get("imagenet_r")
    assert "Did you mean: imagenet-r?" in info.value.args[0]


def test_conflicting_registration_is_refused():
    reg = Registry("model")
    reg.add("a", "os:sep")
    reg.add("a", "os:sep")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", "os:pathsep")


def test_message_without_matches_lists_known_names():
    msg = unknown_name_message("shift", "zzz", ["imagenet", "objectnet"])
    assert "Did you mean" not in msg
    assert "imagenet, objectnet" in msg


def test_scoped_registration_is_undone_after_the_block():
    reg = Registry("shift")
    reg.add("kept", "os:sep")
    with reg.scoped({"temp": "os:pathsep", "kept": "os:sep"}):
        assert reg.get("temp") == __import__("os").pathsep
    assert reg.names() == ["kept"]
    with pytest.raises(KeyError):
        reg.get("temp")
