"""Usage errors are one line and exit 2, like every other error; help is still help.

Click once drew a six-line framed box for ``--epochs 1e9`` or an unknown option.
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--epochs", "1e9"], "Invalid value for '--epochs' / '-e'"),
        (["train", "--no-such-flag"], "No such option: --no-such-flag"),
        (["nosuch"], "No such command 'nosuch'."),
        (["eval"], "Missing argument"),
    ],
)
def test_a_usage_error_is_one_line(run_cli, args, message):
    code, out, err = run_cli(*args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("convlens: error: ") and message in err


def test_help_and_version_are_unchanged(run_cli):
    code, out, _ = run_cli("models", "--help")
    assert code == 0 and "Usage:" in out
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("convlens ")
    code, out, err = run_cli()  # no command: the help
    assert code == 2 and "Usage:" in out + err and "convlens: error" not in err
