"""Errors grouped by what the caller should do about them.

main() maps each class to one line on stderr and a documented exit status:
ConfigError 2 (fix the input, nothing was started), ChildCrashed 3 (a process of the
emulated host died; the run failed and was cleaned up), ProtocolError 4, EmuError 1.
"""


class EmuError(Exception):
    exit_status = 1


class ConfigError(EmuError):
    """Bad config, knob value or command-line input. Raised before anything starts."""
    exit_status = 2


class ChildCrashed(EmuError):
    """A NIC or CPU process exited while the run needed it."""
    exit_status = 3


class ProtocolError(EmuError):
    """A message with the wrong version, run id or shape."""
    exit_status = 4
