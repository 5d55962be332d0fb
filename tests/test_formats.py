import numpy as np
import pytest

from linecube.io import formats as F


def test_line_list_matches_paper_notes(lines):
    assert len(lines) == 19
    expected = [3727.092, 3729.875, 3889.0, 4072.3, 4102.89, 4341.68, 4364.436, 4862.68, 4932.603, 4960.295,
                5008.240, 6302.046, 6365.536, 6529.03, 6549.86, 6564.61, 6585.27, 6718.29, 6732.67]  # fmt: skip
    np.testing.assert_allclose(lines.rest, expected)
    assert lines.names[lines.index("Halpha")] == "Halpha"
    with pytest.raises(KeyError, match="unknown emission line"):
        lines.index("Lyalpha")


def test_packaged_line_list_is_the_resource(lines):
    packaged = F.load_lines()
    assert packaged.names == lines.names
    np.testing.assert_array_equal(packaged.rest, lines.rest)
