"""Configuration files: env interpolation, typed settings, and problems reported with positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.loader import load_config
from engine.settings import ByteSize, ConfigError, Duration
from tests.support import ROOT


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(folder: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(folder, environ or {})
    return [str(p) for p in caught.value.problems]


def test_the_shipped_configuration_loads_with_its_defaults() -> None:
    config = load_config(ROOT / "routes", {})
    listener = config.listeners["ehr"]
    assert (listener.host, listener.port) == ("127.0.0.1", 2575)
    assert listener.max_message_size == 1024 * 1024
    assert listener.duplicate_window == 86400


def test_environment_variables_override_the_defaults_in_the_files() -> None:
    config = load_config(ROOT / "routes", {"CROSSWALK_PORT": "3575", "CROSSWALK_HOST": "0.0.0.0"})
    assert (config.listeners["ehr"].host, config.listeners["ehr"].port) == ("0.0.0.0", 3575)


def test_an_unknown_key_is_reported_with_its_position_and_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt:\n    port: 2575\n    idle_timout: 5m\n")
    (message,) = problems(tmp_path)
    assert message.startswith(f"{tmp_path / 'a.yaml'}:4:5: unknown key 'idle_timout'")
    assert "did you mean 'idle_timeout'?" in message


def test_a_value_of_the_wrong_type_is_reported_with_its_position(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt:\n    port: twenty\n    read_timeout: soon\n")
    first, second = problems(tmp_path)
    assert ":3:11: listener 'adt': port: expected a whole number (value: 'twenty')" in first
    assert ":4:19:" in second and "duration" in second


def test_an_unset_variable_without_default_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt:\n    port: ${ADT_PORT}\n")
    (message,) = problems(tmp_path)
    assert ":3:11: environment variable ADT_PORT is not set" in message
    assert "${ADT_PORT:-value}" in message


def test_a_listener_defined_twice_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt:\n    port: 2575\n")
    write(tmp_path, "b.yaml", "listeners:\n  adt:\n    port: 2576\n")
    (message,) = problems(tmp_path)
    assert f"{tmp_path / 'b.yaml'}:2:3: listener 'adt' is already defined at" in message
    assert f"{tmp_path / 'a.yaml'}:2:3" in message


def test_two_listeners_on_one_port_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt:\n    port: 2575\n  orders:\n    port: 2575\n")
    (message,) = problems(tmp_path)
    assert "listener 'orders' uses 127.0.0.1:2575, as does listener 'adt'" in message


def test_invalid_values_are_checked(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        "listeners:\n  adt:\n    port: 70000\n    charset: KLINGON\n    max_message_size: 10\n",
    )
    found = "\n".join(problems(tmp_path))
    assert "port 70000 is outside 0-65535" in found
    assert "charset 'KLINGON' is unknown" in found
    assert "max_message_size must be at least 1KiB" in found


def test_yaml_syntax_errors_point_at_the_line(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt:\n    port: [2575\n")
    (message,) = problems(tmp_path)
    assert "YAML syntax error" in message and f"{tmp_path / 'a.yaml'}:4:" in message


def test_an_unknown_section_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt: {}\nlistners:\n  x: {}\n")
    (message,) = problems(tmp_path)
    assert ":3:1: unknown section 'listners'" in message


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "listeners:\n  adt:\n    prot: 1\n")
    write(tmp_path, "b.yaml", "listeners:\n  orders:\n    port: x\n")
    assert len(problems(tmp_path)) == 2


def test_a_folder_without_listeners_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "# nothing yet\n")
    (message,) = problems(tmp_path)
    assert "no listeners are configured" in message


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30), ("30s", 30), ("500ms", 0.5), ("5m", 300), ("24h", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert Duration.parse(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("1048576", 1048576), ("512KiB", 524288), ("1MiB", 1048576), ("2MB", 2e6)]
)
def test_sizes(text: str, size: int) -> None:
    assert ByteSize.parse(text) == size
