"""Hand convolution's bounds: the explorer's, in the library, the CLI and its --help.

Finite values whose products overflow once answered the explorer with a 500 and made
``convlens convolve --json`` print ``Infinity`` (not JSON) and exit 0; ``--padding 100000000``
tried to allocate the padded picture.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from convlens.errors import ConvlensError
from convlens.inspect import convolve
from convlens.inspect.convolve import MAX_KERNEL, MAX_PADDING

HUGE = [[1e200] * 3] * 3  # finite, but 1e200 * 1e200 is not


def test_overflowing_products_are_refused_naming_the_image():
    with pytest.raises(ConvlensError, match="products overflow") as caught:
        convolve(HUGE, HUGE)
    assert caught.value.parameter == "image"


def test_bounds_in_the_library():
    with pytest.raises(ConvlensError, match=rf"padding: expected a whole number 0..{MAX_PADDING}, got"):
        convolve([[0.0] * 9] * 9, "edge", padding=MAX_PADDING + 1)
    side = MAX_KERNEL + 1
    with pytest.raises(ConvlensError, match=rf"kernel: at most {MAX_KERNEL}x{MAX_KERNEL}"):
        convolve([[0.0] * 20] * 20, [[1.0] * side] * side)
    with pytest.raises(ConvlensError, match="image: pixel values must be finite"):
        convolve([[float("nan")] * 3] * 3, "identity")
    assert convolve([[0.0] * 9] * 9, "edge", padding=MAX_PADDING).output.shape == (21, 21)


def test_the_explorer_answers_4xx_not_500(digits_run):
    from convlens.server import create_app

    client = TestClient(create_app([digits_run], allowed_hosts=["testserver"]), raise_server_exceptions=False)
    response = client.post("/api/playground/convolve", json={"image": HUGE, "kernel": HUGE})
    assert 400 <= response.status_code < 500, response.text
    assert "overflow" in response.json()["detail"]


def test_the_cli_refuses_with_one_line_and_states_its_bounds(run_cli):
    code, out, err = run_cli("convolve", "smiley", "--kernel", "1e308,1e308;1e308,1e308", "--json")
    assert code == 2 and out == "" and "Traceback" not in err and "products overflow" in err
    code, out, err = run_cli("convolve", "smiley", "--padding", "100000000")
    assert (
        code == 2
        and out == ""
        and err.strip()
        == (f"convlens: error: --padding: expected a whole number 0..{MAX_PADDING}, got 100000000")
    )
    code, out, _ = run_cli("convolve", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert f"(0..{MAX_PADDING})" in text and f"(at most {MAX_KERNEL}x{MAX_KERNEL})" in text


def test_json_output_never_holds_nan_or_infinity():
    """Whatever a command computes, --json prints strict JSON or one error line."""
    from convlens.cli import render

    render.print_json({"value": 1.0})  # strict JSON goes through
    with pytest.raises(ConvlensError, match="NaN or infinite"):
        render.print_json({"value": float("inf")})
