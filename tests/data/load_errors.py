"""The one check of a data loader's error, shared by the tests of every loader in this folder."""

import pytest

from fastslow.data import load_dataset
from fastslow.errors import DataError


def load_error(spec, **kwargs) -> str:
    """The DataError message for ``spec``, checked to be one line."""
    with pytest.raises(DataError) as info:
        load_dataset(str(spec), **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and ": " in message
    return message
