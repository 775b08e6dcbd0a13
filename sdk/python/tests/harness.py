"""What the SDK's check scripts (checks.py, many_endpoints.py) share: named checks that record
a failure and go on, and the assertion that a call is refused with an error of a given kind."""

# What no message of the admin API may say to an SDK user: the CLI's commands and flags.
CLI_WORDS = ("online-endpoint", "online-deployment", "--traffic", "--set", "--all-traffic", "--yes", "switchyard ")

failed = []


def check(text):
    """Runs the decorated check at once; a failure is recorded and the next check runs."""

    def run(fn):
        print("check:", text, flush=True)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next runs
            print("FAILED: {}: {}: {}".format(text, type(e).__name__, e), flush=True)
            failed.append(text)
        return fn

    return run


def refused(call, kind, status=None):
    """Calls ``call``, which must raise ``kind`` (with ``status_code`` ``status`` when given);
    returns the error's message."""
    try:
        call()
    except kind as e:
        if status is not None:
            got = getattr(e, "status_code", None)
            assert got == status, "status_code {!r}, not {}".format(got, status)
        return str(e)
    raise AssertionError("not refused with {}".format(kind.__name__))


def no_cli_advice(message):
    assert not any(w in message for w in CLI_WORDS), "CLI advice given to an SDK user: " + message
    return message
