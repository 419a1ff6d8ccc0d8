"""The Storage Box password: where it may come from, and that it never shows itself."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from brainall_ops.errors import BrainallError
from brainall_ops.rolemap import REPO_ROOT
from brainall_ops.shared.secrets import MASK, STORAGEBOX_PASSWORD, Secret

PASSWORD_ENV = STORAGEBOX_PASSWORD.variable
PASSWORD_FILE_ENV = STORAGEBOX_PASSWORD.file_variable
box_password = STORAGEBOX_PASSWORD.read


def read_password_file(path: Path, repo_root: Path) -> Secret | None:
    return STORAGEBOX_PASSWORD.read({PASSWORD_FILE_ENV: str(path)}, repo_root)


PASSWORD = "Zq7-not-a-real-box-password"


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "storagebox-password"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_nothing_set_means_no_password() -> None:
    assert box_password({}) is None


def test_from_the_environment() -> None:
    secret = box_password({PASSWORD_ENV: PASSWORD})
    assert secret is not None and secret.reveal() == PASSWORD


def test_from_a_private_file_without_its_trailing_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, PASSWORD + "\n")
    secret = box_password({PASSWORD_FILE_ENV: str(path)})
    assert secret is not None and secret.reveal() == PASSWORD


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o070])
def test_a_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, PASSWORD, mode)
    with pytest.raises(BrainallError, match=rf"open to group or others \(mode {mode:04o}\).*chmod 600") as info:
        box_password({PASSWORD_FILE_ENV: str(path)})
    assert PASSWORD not in str(info.value)


def test_a_file_inside_the_repository_is_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, PASSWORD)
    with pytest.raises(BrainallError, match="inside the repository"):
        read_password_file(path, repo_root=tmp_path)
    with pytest.raises(BrainallError, match="inside the repository"):
        read_password_file(REPO_ROOT / "inventories" / "brainall-v2.yaml", repo_root=REPO_ROOT)


def test_a_link_into_the_repository_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    link.symlink_to(REPO_ROOT / "README.md")
    with pytest.raises(BrainallError, match="inside the repository"):
        box_password({PASSWORD_FILE_ENV: str(link)})


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BrainallError, match=r"cannot read the secret file: No such file or directory$"):
        box_password({PASSWORD_FILE_ENV: str(tmp_path / "nope")})


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BrainallError, match="not a regular file"):
        box_password({PASSWORD_FILE_ENV: str(tmp_path)})


@pytest.mark.parametrize("value", ["", "two\nlines", "nul\x00byte", "\n\n"])
def test_empty_or_multi_line_passwords_are_refused(value: str) -> None:
    with pytest.raises(BrainallError) as info:
        box_password({PASSWORD_ENV: value})
    assert str(info.value).startswith(f"{PASSWORD_ENV}: the secret ")
    assert ("empty" if not value else "one line") in str(info.value)
    if value.strip():
        assert value not in str(info.value)


def test_both_set_is_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, PASSWORD)
    with pytest.raises(BrainallError, match="not both"):
        box_password({PASSWORD_ENV: PASSWORD, PASSWORD_FILE_ENV: str(path)})


def test_the_real_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)
    secret = box_password()
    assert secret is not None and secret.reveal() == PASSWORD
    assert os.environ[PASSWORD_ENV] == PASSWORD


def test_a_secret_never_shows_itself() -> None:
    secret = Secret(PASSWORD)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % (secret,), repr([secret])]  # noqa: UP031
    shown.append(repr({"password": secret}))
    for text in shown:
        assert PASSWORD not in text
        assert MASK in text
    assert secret == Secret(PASSWORD) and secret != Secret("other") and secret != PASSWORD
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_an_exception_carrying_a_secret_shows_the_mask() -> None:
    secret = Secret(PASSWORD)
    error = BrainallError(f"login as u503462 with {secret} failed")
    assert PASSWORD not in str(error) and PASSWORD not in repr(error)
