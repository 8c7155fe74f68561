"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def jack_rig() -> Iterator[Callable[..., object]]:
    """A factory starting private JACK servers with a fake microphone and speakers (see ``jack_fixture.py``):
    ``rig = jack_rig(samplerate=16000, period=160)``. Everything it started is stopped after the test.

    Skipped when jackd, libportaudio2 or JACK-Client are missing, except in CI (``CI=true``), which installs
    them, so there a missing piece fails the test instead of hiding it.
    """
    from jack_fixture import TRIES, JackRig, RigStalled, missing_live_audio

    reason = missing_live_audio()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"live audio cannot be tested in CI: {reason}")
        pytest.skip(reason)
    rigs: list[JackRig] = []

    def start(samplerate: int = 16000, period: int = 160, tries: int = TRIES) -> JackRig:
        for attempt in range(tries):  # a server that runs late from its start is the machine, not the test
            rig = JackRig(samplerate, period)
            rigs.append(rig)
            try:
                return rig.__enter__()
            except RigStalled:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    yield start
    for rig in rigs:
        rig.close()
