"""Shared fixtures: each test bed is a real part (see tests/beds/ and docs/test-beds.md)."""

from beds.micropython import *  # noqa: F401,F403
from beds.cross import *  # noqa: F401,F403
from beds.microbit import *  # noqa: F401,F403
