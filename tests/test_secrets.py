"""Passwords in storage and tracking URLs are masked wherever paretune shows a URL or a text."""

from __future__ import annotations

import logging

import pytest

from paretune._secrets import MASK, redact, redact_url, remember_secrets_of


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg2://bob:s3cr%40t@127.0.0.1:5432/optuna",
            "postgresql+psycopg2://bob:***@127.0.0.1:5432/optuna",
        ),
        ("http://me:hunter22@mlflow.internal:5000", "http://me:***@mlflow.internal:5000"),
        ("https://me:p@ss@mlflow/api", "https://me:***@mlflow/api"),
        (
            "postgresql://db/optuna?password=abcd1234&sslmode=require",
            "postgresql://db/optuna?password=***&sslmode=require",
        ),
        ("postgresql://bob@db/optuna", "postgresql://bob@db/optuna"),
        ("sqlite:////runs/a:b/study.db", "sqlite:////runs/a:b/study.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_redact_url_masks_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_masks_urls_inside_a_text() -> None:
    text = "cannot open 'postgresql://u:topsecret@h/db': API request to http://a:b2c3@h:1/x failed"
    masked = redact(text)
    assert "topsecret" not in masked and "b2c3" not in masked
    assert masked.count(MASK) == 2


def test_remembered_passwords_are_masked_anywhere_also_in_log_records(caplog) -> None:
    remember_secrets_of("postgresql://svc:Rem3mbered%21@db/optuna")
    assert redact("driver said: password Rem3mbered! rejected") == (
        f"driver said: password {MASK} rejected"
    )
    with caplog.at_level(logging.WARNING):
        logging.getLogger("some.library").warning("retrying %s", "Rem3mbered%21 at db")
    assert caplog.records[-1].getMessage() == f"retrying {MASK} at db"
