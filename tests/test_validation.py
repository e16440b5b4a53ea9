"""The base of settings models: unknown keys, errors located at a field, pydantic errors as
ConfigErrors."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import Field, ValidationError, model_validator

from paretune import ConfigError
from paretune._validation import FieldError, StrictModel, config_error


class Section(StrictModel):
    size: int = Field(default=1, ge=1)


class Located(StrictModel):
    locate_unknown_keys: ClassVar[bool] = True

    low: float = 0.0
    high: float = 1.0
    section: Section | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Located:
        if self.low > self.high:
            raise FieldError(f"`low <= high` must hold, but got low={self.low}.", path=("low",))
        return self


class LocatedSection(Section):
    locate_unknown_keys: ClassVar[bool] = True


class Outer(StrictModel):
    sections: list[LocatedSection] = []


def error(model: type[StrictModel], data: object) -> ConfigError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return config_error(info.value)


def test_an_unknown_key_is_located_at_the_model_by_default():
    err = error(Section, {"size": 2, "colour": "red"})
    assert err.path == ()
    assert err.message == "unknown key 'colour'; allowed keys: size"


def test_a_model_may_locate_unknown_keys_at_the_key():
    err = error(Located, {"low": 0.5, "width": 3})
    assert err.path == ("width",)
    assert err.message == "unknown key 'width'; allowed keys: low, high, section"
    # Below a field and a list index too.
    assert error(Outer, {"sections": [{}, {"sizes": 2}]}).path == ("sections", 1, "sizes")
    # The unknown key is reported before the other keys' values are checked.
    assert error(Located, {"low": "a", "hgih": 1.0}).path == ("hgih",)


def test_a_field_error_is_located_below_its_model():
    err = error(Located, {"low": 2.0})
    assert err.path == ("low",)
    assert err.message == "`low <= high` must hold, but got low=2.0."
    assert str(err) == "low: `low <= high` must hold, but got low=2.0."


def test_config_error_names_the_value_received_and_counts_the_rest():
    err = error(Located, {"section": {"size": 0}, "high": "x"})
    assert err.path == ("high",)  # fields are checked in their order
    assert "(and 1 more error)" in err.message
    err = error(Section, {"size": 0})
    assert err.path == ("size",)
    assert err.message == "got 0: Input should be greater than or equal to 1"
