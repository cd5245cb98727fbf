"""Assertions shared by the tests, on LMTP replies given as (code, text)."""

import re


def assert_saved(reply, rcpt):
    """mailroute's success reply after DATA: 250 2.0.0 <rcpt> <session> Saved."""
    code, text = reply
    assert code == 250, f"{rcpt}: expected 250, got {code} {text}"
    assert re.fullmatch(r"2\.0\.0 <" + re.escape(rcpt) + r"> \S+ Saved", text), \
        f"{rcpt}: bad success text {text!r}"


def assert_reply(reply, code, enhanced_prefix, rcpt=None):
    """reply has this code, its text starts with the enhanced code prefix
    (e.g. "4.4." or "5.1.1 "), and names <rcpt> when given."""
    got_code, text = reply
    assert (got_code, text[:len(enhanced_prefix)]) == (code, enhanced_prefix), \
        f"expected {code} {enhanced_prefix}..., got {got_code} {text}"
    if rcpt is not None:
        assert f"<{rcpt}>" in text, f"reply {got_code} {text!r} does not name <{rcpt}>"


def assert_rcpt_ok(reply, rcpt):
    code, text = reply
    assert code == 250 and text.startswith("2.1.5"), \
        f"RCPT {rcpt}: expected 250 2.1.5, got {code} {text}"
