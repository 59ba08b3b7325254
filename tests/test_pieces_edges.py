"""Edge cases of capacity.pieces: exact error messages, the reader's defaults, the work
estimate, the command line's text and the fast path's tolerances."""

from fractions import Fraction as F

import pytest

from capacity.pieces import NetworkError, load_network


def test_direction_must_not_be_zero():
    """A zero direction is refused with the message naming it."""
    with pytest.raises(NetworkError, match=r"^direction must not be the zero vector$"):
        load_network({"layers": [], "output": {"weight": [1, 1]}, "direction": [0, F(0)]})
