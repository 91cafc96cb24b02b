"""A manager will not guard a workflow with a token anyone could guess, and says so; a
token file other users can read is pointed out.

Before, a token of one character in a world-readable file was accepted silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kubevine import auth


def _manager(tmp_path: Path, token: str, mode: int) -> subprocess.CompletedProcess[str]:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(mode)
    env = {k: v for k, v in os.environ.items() if k != auth.ENV}
    return subprocess.run(
        [
            *(sys.executable, "-m", "kubevine", "manager", "--port", "0", "--workdir", str(tmp_path / "m")),
            *("--token-file", str(token_file), "--redis", "redis://127.0.0.1:1/0"),
            *("--redis-outage-grace", "0"),  # the unreachable Redis is not waited for
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_one_character_token_stops_the_manager_with_the_reason(tmp_path: Path) -> None:
    done = _manager(tmp_path, "x", 0o600)
    assert done.returncode == 2
    assert "has 1 character(s): a workflow token needs at least 16" in done.stderr


def test_a_token_file_others_can_read_is_pointed_out(tmp_path: Path) -> None:
    # a long token passes the check; the manager then stops on the unreachable Redis
    done = _manager(tmp_path, "a-long-enough-token-0123456789", 0o644)
    assert "can be read by other users (mode 644): chmod 600" in done.stderr
    assert "has 1 character" not in done.stderr
