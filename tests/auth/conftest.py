from __future__ import annotations

from pathlib import Path

import pytest

from ._support import Env, make_env, make_users_template


@pytest.fixture(scope="session")
def users_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_users_template(tmp_path_factory.mktemp("users") / "users.toml")


@pytest.fixture
def env(tmp_path: Path, users_template: Path) -> Env:
    return make_env(tmp_path, users_template)
