from __future__ import annotations

import os

import pytest

from netdiag.errors import PrivilegeError
from netdiag.lab import Lab, two_node


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the unprivileged path: run as a normal user")
def test_lab_without_privileges_says_so() -> None:
    with pytest.raises(PrivilegeError, match="CAP_"):
        Lab.start(two_node(0.01, 0))
